"""The held-out pipeline hands a pretrained baseline its native preprocessing from the source photos when the raw
folder is known, and says in its note when it ran on crops."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fr_lib.evaluation.held_out import HeldOutSplit, evaluate_models

dlib_resnet = pytest.importorskip("fr_lib.embedders.dlib_resnet")
if not dlib_resnet.dlib_available():
    pytest.skip("the dlib extra is not installed (pip install 'fr_lib[dlib]')", allow_module_level=True)


def test_dlib_row_from_source_photos_and_crop_note(tmp_path):
    from skimage import data

    from fr_lib.data import scan_folder
    from fr_lib.embedders.native import CROPS_NOTE, NATIVE_PREPROCESSING
    from fr_lib.evaluation.metrics import identification_rate

    face = np.ascontiguousarray(data.astronaut())
    photos = {"a/1.jpg": face, "a/2.jpg": np.ascontiguousarray(face[:, ::-1]),
              "b/1.jpg": (face * 0.7).astype(np.uint8), "b/2.jpg": np.ascontiguousarray((face * 0.7)[:, ::-1].astype(np.uint8)),
              "c/1.jpg": (face * 0.5 + 60).astype(np.uint8)}
    raw, aligned = tmp_path / "raw", tmp_path / "aligned"
    for rel, img in photos.items():
        for root in (raw, aligned):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(raw / rel, quality=95)
        # crops that only a crop-based evaluation would see: distinct noise, no face
        Image.fromarray(np.random.default_rng(len(rel) + ord(rel[0])).integers(0, 255, (112, 112, 3), np.uint8)
                        ).save(aligned / rel)
    index = scan_folder(aligned)
    lab = {c: i for i, c in enumerate(index.classes)}
    query = [(r, lab[r.split("/")[0]]) for r, _ in index.samples if not r.startswith("c/")]
    distractors = [(r, lab["c"]) for r, _ in index.samples if r.startswith("c/")]
    split = HeldOutSplit(index, [], [], [], query, distractors, ["a", "b"], ["c"])

    native = evaluate_models({}, split, {"dlib": "dlib-resnet"}, raw_root=raw, progress=False)
    crops = evaluate_models({}, split, {"dlib": "dlib-resnet"}, progress=False)
    assert NATIVE_PREPROCESSING["dlib-resnet"] in native.notes["dlib"]
    assert CROPS_NOTE in crops.notes["dlib"]

    emb = dlib_resnet.DlibResNetEmbedder()
    own = {rel: emb.describe_photo(np.asarray(Image.open(raw / rel).convert("RGB"))).descriptors[0]
           for rel in photos}
    e = native.embeddings["dlib"]
    np.testing.assert_allclose(e.query, np.stack([own[r] for r, _ in query]), atol=1e-5)
    np.testing.assert_allclose(e.distractors, np.stack([own[r] for r, _ in distractors]), atol=1e-5)
    ref = identification_rate(np.stack([own[r] for r, _ in query]), np.array([lb for _, lb in query]),
                              np.stack([own[r] for r, _ in distractors]))
    np.testing.assert_allclose(native.results["dlib"].tprs, ref.tprs)
    assert not np.allclose(crops.embeddings["dlib"].query, e.query, atol=1e-3)

    from fr_lib.evaluation.held_out import write_report
    paths = write_report(tmp_path / "report", native.results, native.embeddings, native.notes, bootstrap=0)
    assert f"- dlib: {NATIVE_PREPROCESSING['dlib-resnet']}" in paths["table.md"].read_text()
