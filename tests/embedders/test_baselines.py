"""dlib ResNet baseline: checked against dlib's own API on real faces shipped by scikit-image.

Faces used (no download): skimage.data.astronaut() (Eileen Collins, frontal, ~90 px face) and the first faces of
skimage.data.lfw_subset() (25 x 25 greyscale LFW crops of other people). skimage.data.camera() is not used: the
cameraman is in profile behind a camera and dlib's frontal HOG detector finds no face in it.
"""
from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch
from PIL import Image

from fr_lib.embedders.dlib_resnet import dlib_available

needs_dlib = pytest.mark.skipif(not dlib_available(),
                                reason="dlib baseline not installed: pip install 'fr_lib[dlib]'")

DLIB_SAME_PERSON = 0.6   # dlib's documented threshold on the Euclidean distance of raw descriptors


@pytest.fixture(scope="module")
def dlib_models():
    """dlib's own objects, built here independently of fr_lib (the reference implementation)."""
    import dlib

    from fr_lib.embedders.dlib_resnet import model_path
    return (dlib, dlib.get_frontal_face_detector(), dlib.shape_predictor(str(model_path("shape_predictor"))),
            dlib.face_recognition_model_v1(str(model_path("descriptor"))))


@pytest.fixture(scope="module")
def embedder():
    from fr_lib.embedders.dlib_resnet import DlibResNetEmbedder
    return DlibResNetEmbedder()


@pytest.fixture(scope="module")
def astronaut():
    from skimage.data import astronaut
    return astronaut()


def _crop(img: np.ndarray, box, dx=0, dy=0, scale=1.0, size=150) -> np.ndarray:
    """A square crop framed like our aligned crops: the detector box (l, t, r, b) sits at about (0.13, 0.28, 0.82,
    0.97) of the crop, where dlib's detector finds the astronaut's face in her ArcFace-template crop. dx, dy shift the window
    (px of the photo), scale grows it about its centre; resized to ``size``."""
    l, t, r, b = box
    side = (r - l) / 0.69 * scale
    cx, cy = l - 0.13 * (r - l) / 0.69 + (r - l) / 0.69 / 2 + dx, t - 0.28 * (r - l) / 0.69 + (r - l) / 0.69 / 2 + dy
    window = tuple(int(round(v)) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
    return np.asarray(Image.fromarray(img).crop(window).resize((size, size), Image.BICUBIC))


def _to_tensor(crops) -> torch.Tensor:
    """What ToTensor gives: (B, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255


def _reference_box(dlib_models, img):
    _, detector, _, _ = dlib_models
    rect = max(detector(img, 1), key=lambda r: r.area())
    return rect, (rect.left(), rect.top(), rect.right(), rect.bottom())


def test_missing_dlib_gives_install_hint(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "dlib":
            raise ImportError("No module named 'dlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    from fr_lib.embedders.dlib_resnet import DlibResNetEmbedder
    with pytest.raises(ImportError, match=r"pip install 'fr_lib\[dlib\]'"):
        DlibResNetEmbedder()


@needs_dlib
def test_describe_photo_is_dlibs_default_pipeline(embedder, dlib_models, astronaut):
    dlib, detector, predictor, facerec = dlib_models
    faces = embedder.describe_photo(astronaut, normalize=False)
    rect, box = _reference_box(dlib_models, astronaut)
    assert tuple(faces.boxes[0]) == box
    reference = np.asarray(facerec.compute_face_descriptor(astronaut, predictor(astronaut, rect)))
    assert faces.descriptors.shape[1] == 128
    np.testing.assert_allclose(faces.descriptors[0], reference, rtol=0, atol=1e-6)

    unit = embedder.describe_photo(Image.fromarray(astronaut)).descriptors  # PIL input, unit-normalised
    np.testing.assert_allclose(unit[0], reference / np.linalg.norm(reference), atol=1e-6)


@needs_dlib
def test_forward_equals_dlib_descriptor_of_the_same_chip(embedder, dlib_models, astronaut):
    dlib, _, predictor, facerec = dlib_models
    _, box = _reference_box(dlib_models, astronaut)
    crops = [_crop(astronaut, box), _crop(astronaut, box, scale=1.1, size=112)[:, ::-1].copy()]
    out = embedder(_to_tensor(crops[:1]))
    out2 = embedder(_to_tensor(crops[1:]))
    for crop, emb in zip(crops, (out, out2)):
        h, w = crop.shape[:2]
        l, t, r, b = embedder.face_box  # the documented rectangle: fractions of the crop, right/bottom exclusive
        rect = dlib.rectangle(round(l * w), round(t * h), round(r * w) - 1, round(b * h) - 1)
        chip = dlib.get_face_chip(crop, predictor(crop, rect), 150, 0.25)
        reference = np.asarray(facerec.compute_face_descriptor(chip))
        assert emb.dtype == torch.float32 and emb.shape == (1, 128)
        np.testing.assert_allclose(emb[0].numpy(), reference / np.linalg.norm(reference), atol=1e-6)


@needs_dlib
def test_forward_rejects_standardised_images(embedder):
    with pytest.raises(ValueError, match="normalization='unit'"):
        embedder(torch.full((1, 3, 150, 150), -1.0))


@needs_dlib
def test_same_face_is_closer_than_other_people(embedder, dlib_models, astronaut):
    from skimage.data import lfw_subset

    from fr_lib.embedders.dlib_resnet import DlibResNetEmbedder

    _, box = _reference_box(dlib_models, astronaut)
    # The same face under small changes of framing, scale, brightness, a mirror image and a 112 px crop.
    variants = [_crop(astronaut, box)]
    variants += [_crop(astronaut, box, dx=dx, dy=dy) for dx, dy in ((6, -4), (-5, 5))]
    variants += [_crop(astronaut, box, scale=s) for s in (0.9, 1.1)]
    variants += [np.clip(variants[0] * f, 0, 255).astype(np.uint8) for f in (0.75, 1.25)]
    variants += [variants[0][:, ::-1].copy(), _crop(astronaut, box, size=112)]
    same = embedder.describe_crops(variants, normalize=False)
    same_dist = np.linalg.norm(same[1:] - same[0], axis=1)
    assert same_dist.max() < DLIB_SAME_PERSON

    # Other people: LFW faces come as tight 25 x 25 greyscale crops, so compare like with like: the astronaut's
    # face is reduced to the same tight 25 x 25 greyscale crop, then every face is upsampled and padded the same
    # way (the face in the middle half), which a second embedder's face_box describes.
    def as_lfw(grey01: np.ndarray) -> np.ndarray:
        big = np.asarray(Image.fromarray((grey01 * 255).round().astype(np.uint8)).resize((150, 150), Image.BICUBIC))
        return np.repeat(np.pad(big, 75, mode="edge")[..., None], 3, axis=-1)

    l, t, r, b = box
    ast_small = np.asarray(Image.fromarray(astronaut).crop(box).convert("L").resize((25, 25), Image.BILINEAR)) / 255
    others = lfw_subset()[:12]  # the first 100 entries are faces, of many different people
    padded = DlibResNetEmbedder(face_box=(0.25, 0.25, 0.75, 0.75))
    desc = padded.describe_crops([as_lfw(ast_small)] + [as_lfw(f) for f in others], normalize=False)
    other_dist = np.linalg.norm(desc[1:] - desc[0], axis=1)
    # even degraded to 25 px, the astronaut is far from every other person; her undegraded variants are far closer
    assert same_dist.max() < 0.5 * other_dist.min()
    assert np.median(other_dist) > DLIB_SAME_PERSON

    # the same ordering holds for cosine similarity of the unit embeddings forward() returns
    emb = embedder(_to_tensor(variants[:-1])).numpy()  # the 150 px ones (a batch has one size)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    unit_other = desc / np.linalg.norm(desc, axis=1, keepdims=True)
    assert (emb[1:] @ emb[0]).min() > (unit_other[1:] @ unit_other[0]).max()


@needs_dlib
def test_copies_reload_dlib_models(embedder, astronaut, dlib_models):
    import copy
    import pickle

    _, box = _reference_box(dlib_models, astronaut)
    x = _to_tensor([_crop(astronaut, box)])
    for clone in (copy.deepcopy(embedder), pickle.loads(pickle.dumps(embedder))):
        assert torch.equal(clone(x), embedder(x))
