"""Native preprocessing of pretrained baselines: dlib's chip from the source photo is dlib's own path, the
aligned-crop -> source-photo link, and the fallback to crops (counted)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fr_lib.embedders.native import (CROPS_NOTE, NATIVE_PREPROCESSING, dlib_chip_from_photo, embed_photos,
                                     native_preprocessing, source_photo)

dlib_resnet = pytest.importorskip("fr_lib.embedders.dlib_resnet")
if not dlib_resnet.dlib_available():
    pytest.skip("the dlib extra is not installed (pip install 'fr_lib[dlib]')", allow_module_level=True)


@pytest.fixture(scope="module")
def embedder():
    return dlib_resnet.DlibResNetEmbedder()


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data
    return np.ascontiguousarray(data.astronaut())


def _synthetic_face(size: int = 150) -> np.ndarray:
    from fr_lib.data.synth import identity_traits, render_face
    return np.asarray(render_face(identity_traits(0, 3), np.random.default_rng(1), size).convert("RGB"))


def test_declared_preprocessing():
    assert "150 px" in native_preprocessing("dlib-resnet") and "0.25" in native_preprocessing("dlib-resnet")
    assert "160 px" in native_preprocessing("facenet-vggface2")
    assert native_preprocessing("ce-efficientnet") is None and native_preprocessing("random-efficientnet_b0") is None
    assert "crops" in CROPS_NOTE


def test_dlib_chip_from_photo_is_dlibs_own_descriptor(embedder, astronaut):
    """Our chip -> descriptor equals dlib's compute_face_descriptor(img, shape) on the original photo."""
    dlib = embedder._dlib
    chip = dlib_chip_from_photo(embedder, astronaut)
    assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
    rects, scores, _ = embedder.detector.run(astronaut, 1, 0.0)
    face = max(range(len(rects)), key=lambda i: (rects[i].area(), scores[i]))   # largest, then most confident
    assert rects[face].top() < 150            # Eileen Collins' face, not the patch on her suit
    shape = embedder.shape_predictor(astronaut, rects[face])
    own = np.asarray(embedder.facerec.compute_face_descriptor(astronaut, shape, 0, 0.25))
    ours = np.asarray(embedder.facerec.compute_face_descriptor(chip, 0))
    np.testing.assert_allclose(ours, own, atol=1e-6)
    # and what describe_photo (dlib's full default pipeline) reports for the same face
    np.testing.assert_allclose(ours / np.linalg.norm(ours), embedder.describe_photo(astronaut).descriptors[0],
                               atol=1e-6)


def test_chip_identity_holds_on_synthetic_faces(embedder):
    """For any landmarks (here: the shape predictor on a fixed box of a synthetic face) the explicit chip gives
    the descriptor dlib computes from the photo and the shape."""
    dlib = embedder._dlib
    img = np.ascontiguousarray(_synthetic_face())
    shape = embedder.shape_predictor(img, dlib.rectangle(20, 30, 130, 140))
    chip = np.asarray(dlib.get_face_chip(img, shape, 150, 0.25))
    np.testing.assert_allclose(np.asarray(embedder.facerec.compute_face_descriptor(chip, 0)),
                               np.asarray(embedder.facerec.compute_face_descriptor(img, shape, 0, 0.25)), atol=1e-6)


def test_source_photo_follows_fr_align_naming(tmp_path):
    raw = tmp_path / "raw"
    (raw / "a").mkdir(parents=True)
    for name in ("x.jpg", "y.bmp", "z.webp", "w.tif", "w.png"):
        (raw / "a" / name).write_bytes(b"0")
    assert source_photo("a/x.jpg", raw) == raw / "a" / "x.jpg"
    assert source_photo("a/y.png", raw) == raw / "a" / "y.bmp"          # other formats become .png
    assert source_photo("a/z.png", raw) == raw / "a" / "z.webp"
    assert source_photo("a/w.tif.png", raw) == raw / "a" / "w.tif"      # the clash-avoiding name
    assert source_photo("a/w.png", raw) == raw / "a" / "w.png"
    assert source_photo("a/missing.jpg", raw) is None


def test_embed_photos_native_rows_and_counted_fallbacks(embedder, astronaut, tmp_path):
    raw, aligned = tmp_path / "raw", tmp_path / "aligned"
    for root in (raw, aligned):
        (root / "eileen").mkdir(parents=True)
    Image.fromarray(astronaut).save(raw / "eileen" / "1.jpg", quality=95)
    Image.fromarray(astronaut).save(raw / "eileen" / "2.bmp")
    Image.fromarray(np.full((200, 200, 3), 127, np.uint8)).save(raw / "eileen" / "3.jpg")   # no face
    rels = ["eileen/1.jpg", "eileen/2.png", "eileen/3.jpg", "eileen/4.jpg"]   # 4: no source photo
    crop_vec = np.arange(128, dtype=np.float32) + 1

    def crop_embed(paths):
        return np.stack([crop_vec * (1 + k) for k, _ in enumerate(paths)])

    meta = {"name": "dlib-resnet", "embedding_size": 128}
    res = embed_photos(embedder, meta, rels, aligned, raw, crop_embed)
    assert res.embeddings.shape == (4, 128) and res.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(res.embeddings, axis=1), 1, atol=1e-5)
    own = embedder.describe_photo(np.asarray(Image.open(raw / "eileen" / "1.jpg").convert("RGB"))).descriptors[0]
    np.testing.assert_allclose(res.embeddings[0], own, atol=1e-5)
    bmp = embedder.describe_photo(astronaut).descriptors[0]
    np.testing.assert_allclose(res.embeddings[1], bmp, atol=1e-5)
    assert res.fallbacks == [("eileen/3.jpg", "dlib's detector found no face"), ("eileen/4.jpg", "no source photo")]
    np.testing.assert_allclose(res.embeddings[2], crop_vec / np.linalg.norm(crop_vec), atol=1e-6)
    assert res.preprocessing == NATIVE_PREPROCESSING["dlib-resnet"]


def test_embed_photos_refuses_models_without_native_preprocessing(tmp_path):
    with pytest.raises(ValueError, match="no native preprocessing"):
        embed_photos(None, {"name": "ce-efficientnet"}, [], tmp_path, tmp_path, lambda p: None)


def test_pair_scores_from_source_photos(embedder, astronaut, tmp_path):
    """fr eval --pairs with --raw: the dlib row's pair scores are the cosines of dlib's own descriptors of the
    SOURCE photos, not of the crops (here the crops are deliberately blank, so only the source can score)."""
    from fr_lib.evaluation.metrics.verification import LFWPair
    from fr_lib.evaluation.pair_verification import pair_scores

    raw, aligned = tmp_path / "raw", tmp_path / "aligned"
    photos = {"a/1.jpg": astronaut, "a/2.jpg": np.ascontiguousarray(astronaut[:, ::-1]),
              "b/1.jpg": np.ascontiguousarray(astronaut[::-1].transpose(1, 0, 2)[::-1])}   # rotated: other "person"
    for rel, img in photos.items():
        for root in (raw, aligned):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(raw / rel, quality=95)
        Image.fromarray(np.zeros((112, 112, 3), np.uint8)).save(aligned / rel)
    pairs = [LFWPair(str(aligned / "a/1.jpg"), str(aligned / "a/2.jpg"), True, 0),
             LFWPair(str(aligned / "a/1.jpg"), str(aligned / "b/1.jpg"), False, 0)]
    meta = {"name": "dlib-resnet", "embedding_size": 128, "image_size": 150, "normalization": "unit"}
    info: dict = {}
    scores = pair_scores(embedder, meta, pairs, raw_root=raw, native_info=info, progress=False)
    desc = {rel: embedder.describe_photo(np.asarray(Image.open(raw / rel).convert("RGB"))).descriptors
            for rel in photos}
    fallbacks = {rel for rel, _ in info["fallbacks"]}
    assert "a/1.jpg" not in fallbacks and "a/2.jpg" not in fallbacks
    assert scores[0] == pytest.approx(float(desc["a/1.jpg"][0] @ desc["a/2.jpg"][0]), abs=1e-5)
    assert info["preprocessing"] == NATIVE_PREPROCESSING["dlib-resnet"]
    crop_scores = pair_scores(embedder, meta, pairs, progress=False)      # blank crops: identical descriptors
    assert crop_scores[0] == pytest.approx(1.0, abs=1e-5) and scores[0] < 0.999
