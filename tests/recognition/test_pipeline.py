"""FacePipeline: the training eval transform, detection + alignment + embedding against fr_lib.align run by hand,
face policies, unreadable input, and loading from a training checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _recognition_utils import tiny_pipeline
from PIL import Image

from fr_lib.recognition.pipeline import FaceCountError, FacePipeline, ImageLoadError, weights_fingerprint


@pytest.fixture(scope="module")
def pipeline():
    return tiny_pipeline(16)


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()


def test_preprocess_is_the_training_eval_transform(pipeline, synth_root):
    from fr_lib.data import build_transforms

    path = sorted(synth_root.rglob("*.jpg"))[0]
    pil = Image.open(path).convert("RGB")
    reference = build_transforms("imagenet", 112, train=False)(pil)  # what FaceFolder feeds the model
    x = pipeline.preprocess([np.asarray(pil)])
    torch.testing.assert_close(x[0], reference, rtol=0, atol=0)
    # and the formula: (pixel / 255 - mean) / std per channel, for a crop already at image_size
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = (np.asarray(pil, np.float64) / 255 - mean) / std
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), expected, atol=1e-5)
    # embed_crops = L2-normalised model output
    with torch.no_grad():
        manual = torch.nn.functional.normalize(pipeline.model(x), dim=1).numpy()
    np.testing.assert_allclose(pipeline.embed_crops([str(path)]), manual, atol=1e-6)
    assert np.linalg.norm(pipeline.embed_crops([pil, str(path)]), axis=1) == pytest.approx([1, 1], abs=1e-5)


def test_embed_faces_is_detect_then_align_then_embed(pipeline, astronaut):
    from fr_lib.align import align_face, detect_faces

    (face,) = pipeline.embed_faces(astronaut, policy="all")
    (detection,) = detect_faces([astronaut])[0]
    np.testing.assert_allclose(face.box, detection.box, atol=1e-4)
    np.testing.assert_allclose(face.landmarks, detection.landmarks, atol=1e-4)
    x1, y1, x2, y2 = face.box
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face.landmarks)
    crop = align_face(astronaut, detection.landmarks, size=112)
    np.testing.assert_allclose(face.embedding, pipeline.embed_crops([crop])[0], atol=1e-6)
    # 'aligned': no detection, the whole photo is the crop
    (whole,) = pipeline.embed_faces(astronaut, policy="aligned")
    assert whole.box.tolist() == [0, 0, 512, 512] and whole.landmarks is None
    np.testing.assert_allclose(whole.embedding, pipeline.embed_crops([astronaut])[0], atol=1e-6)


def test_face_policies(pipeline, astronaut):
    photo = Image.fromarray(astronaut)
    canvas = Image.new("RGB", (560, 320), (128, 128, 128))
    canvas.paste(photo.resize((320, 320)), (0, 0))    # larger face on the left
    canvas.paste(photo.resize((200, 200)), (350, 60))  # smaller face on the right
    two = np.asarray(canvas)
    faces = pipeline.embed_faces(two, policy="all")
    assert len(faces) == 2
    (largest,) = pipeline.embed_faces(two, policy="largest")
    assert largest.area == max(f.area for f in faces) and largest.box[2] < 320
    with pytest.raises(FaceCountError, match="found 2"):
        pipeline.embed_faces(two, policy="single")
    blank = np.full((200, 200, 3), 127, np.uint8)
    assert pipeline.embed_faces(blank) == [] and pipeline.embed_faces(blank, policy="largest") == []
    with pytest.raises(FaceCountError, match="found 0"):
        pipeline.embed_faces(blank, policy="single")
    with pytest.raises(ValueError, match="unknown policy"):
        pipeline.embed_faces(blank, policy="best")
    # greyscale input is converted, not a crash inside MTCNN
    grey = np.asarray(photo.convert("L"))
    assert len(pipeline.embed_faces(grey)) == 1


def test_unreadable_input_names_the_file(pipeline, tmp_path):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)
    with pytest.raises(ImageLoadError, match="corrupt.jpg"):
        pipeline.embed_faces(bad)
    with pytest.raises(ImageLoadError, match="missing.png"):
        pipeline.embed_faces(tmp_path / "missing.png")
    with pytest.raises(ImageLoadError, match="shape"):
        pipeline.embed_faces(np.zeros((4, 4, 5), np.uint8))


def test_from_experiment_loads_the_checkpoint(tmp_path, astronaut):
    import config
    from fr_lib.training.checkpoint import save_checkpoint
    from models_definition import build_backbone

    cfg = config.get_experiment("arcface-efficientnet", preset="tiny", **{
        "model.backbone": "test_efficientnet", "model.embedding_size": 24, "data.image_size": 64})
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_backbone("test_efficientnet", embedding_size=24)
        paths.append(save_checkpoint(tmp_path / f"run{seed}" / "best.pt",
                                     {"model": model.state_dict(), "config": cfg.to_dict(), "epoch": 1}))
    p0, p1 = (FacePipeline.from_experiment(p) for p in paths)
    assert (p0.embedding_size, p0.image_size, p0.normalization) == (24, 64, "imagenet")
    assert p0.model_name.startswith("arcface-efficientnet:test_efficientnet:")
    assert p0.model_name != p1.model_name  # other weights, other embedding space
    assert p0.model_name.endswith(weights_fingerprint(p0.model))
    crop = np.asarray(Image.fromarray(astronaut).resize((64, 64)))
    with torch.no_grad():
        manual = torch.nn.functional.normalize(p0.model(p0.preprocess([crop])), dim=1).numpy()[0]
    np.testing.assert_allclose(p0.embed_faces(crop, policy="aligned")[0].embedding, manual, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="fr train"):
        FacePipeline.from_experiment(tmp_path / "nowhere" / "best.pt")
