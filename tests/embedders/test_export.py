"""fr export / fr_lib.embedders.export: ONNX and TorchScript exports agree with PyTorch on real aligned faces (skimage's
astronaut through fr_lib.align) and synthetic faces, carry the preprocessing contract, hold only the embedding
model, and fail clearly on an operator the exporter lacks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="needs the onnx extra: pip install 'fr_lib[onnx]'")
pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install 'fr_lib[onnx]'")

from fr_lib.embedders.export import (CONTRACT_KEY, ExportError, export_checkpoint, export_model,  # noqa: E402
                                     verification_faces)
from fr_lib.embedders.onnx import OnnxEmbedder, contract_path, read_contract  # noqa: E402


@pytest.fixture(scope="module")
def faces_by_size():
    """Verification faces per input size (MTCNN runs once per size)."""
    cache = {}

    def get(size):
        if size not in cache:
            cache[size] = verification_faces(size, num_synthetic=4)
        return cache[size]
    return get


def _checkpoint(tmp_path, backbone="test_efficientnet", image_size=64, threshold=None):
    import config
    from fr_lib.training.checkpoint import save_checkpoint
    from models_definition import build_backbone

    cfg = config.get_experiment("arcface-efficientnet", preset="tiny",
                                **{"model.backbone": backbone, "data.image_size": image_size})
    torch.manual_seed(3)
    model = build_backbone(backbone, embedding_size=cfg.model.embedding_size).eval()
    # a classifier weight matrix with a value no embedding weight has: it must not reach the exported file
    criterion = {"weight": torch.full((997, cfg.model.embedding_size), 0.123456)}
    path = save_checkpoint(tmp_path / "runs" / cfg.name / "best.pt",
                           {"model": model.state_dict(), "criterion": criterion, "config": cfg.to_dict(), "epoch": 1})
    if threshold is not None:
        (path.parent / "threshold.json").write_text(json.dumps({"fpr": 0.01, "threshold": threshold}))
    return path, model, cfg


def test_astronaut_is_aligned_by_fr_lib_align(faces_by_size):
    faces = faces_by_size(64)
    assert faces["astronaut"][0].shape == (64, 64, 3) and faces["astronaut"][0].dtype == np.uint8
    assert len(faces["synthetic"]) == 4 and faces["synthetic"][0].shape == (64, 64, 3)
    assert faces["astronaut"][0].std() > 20   # a real face crop, not a blank image


@pytest.mark.parametrize("backbone,image_size,normalization", [
    ("efficientnet_b0", 64, "imagenet"),
    ("inception_resnet_v1", 80, "facenet"),
    ("mobilenetv3_small_100", 64, "imagenet"),
])
def test_onnx_matches_pytorch_on_aligned_faces(tmp_path, faces_by_size, backbone, image_size, normalization):
    from models_definition import build_backbone

    torch.manual_seed(0)
    model = build_backbone(backbone, embedding_size=32).eval()
    faces = faces_by_size(image_size)
    report = export_model(model, tmp_path / "m.onnx", model_name=f"t:{backbone}", image_size=image_size,
                          normalization=normalization, faces=faces)
    print(report.summary())
    assert report.max_abs_diff <= 1e-4 and report.min_cosine >= 1 - 1e-6
    assert set(report.per_source) == {"astronaut", "synthetic"} and report.num_faces == 6
    # the numbers are real: recompute them independently of verify()
    from fr_lib.data import build_transforms
    tf = build_transforms(normalization, image_size, train=False)
    crops = faces["astronaut"] + faces["synthetic"]
    with torch.inference_mode():
        ref = model(torch.stack([tf(np.array(c)) for c in crops])).numpy()
    got = OnnxEmbedder(tmp_path / "m.onnx").embed_images(crops)
    assert np.abs(ref - got).max() == pytest.approx(report.max_abs_diff, rel=0.5, abs=1e-7)
    # the check would catch a wrong model: another seed's embeddings disagree by far more than the goal
    torch.manual_seed(1)
    other = build_backbone(backbone, embedding_size=32).eval()
    with torch.inference_mode():
        assert np.abs(other(torch.stack([tf(np.array(c)) for c in crops])).numpy() - got).max() > 1e-2


def test_contract_metadata_json_and_dynamic_batch(tmp_path, faces_by_size):
    path, model, cfg = _checkpoint(tmp_path, threshold=0.4321)
    out = tmp_path / "export" / "model.onnx"
    report = export_checkpoint(path, out, faces=faces_by_size(64))
    proto = onnx.load(str(out))
    props = {p.key: p.value for p in proto.metadata_props}
    contract = json.loads(props[CONTRACT_KEY])
    assert contract == json.loads(contract_path(out).read_text()) == read_contract(out) == report.contract
    assert contract["input_size"] == [64, 64] and contract["color_order"] == "RGB"
    assert contract["input_layout"] == "NCHW" and contract["normalization"] == "imagenet"
    assert contract["mean"] == pytest.approx([0.485, 0.456, 0.406]) and contract["std"] == pytest.approx(
        [0.229, 0.224, 0.225])
    assert contract["threshold"] == pytest.approx(0.4321) and contract["threshold_fpr"] == 0.01
    assert contract["embedding_size"] == cfg.model.embedding_size
    assert contract["data_config"] == json.loads(json.dumps(cfg.to_dict()["data"]))
    assert json.loads(props["threshold"]) == pytest.approx(0.4321)
    # the gallery key equals FacePipeline.from_experiment's: galleries enrolled with PyTorch accept the export
    from fr_lib.recognition.pipeline import FacePipeline
    assert contract["model_name"] == FacePipeline.from_experiment(path).model_name
    # batch axis is dynamic: 1, 3 and 7 images
    embedder = OnnxEmbedder(out)
    for n in (1, 3, 7):
        x = np.random.default_rng(n).standard_normal((n, 3, 64, 64)).astype(np.float32)
        with torch.inference_mode():
            ref = model(torch.from_numpy(x)).numpy()
        got = embedder.run(x)
        assert got.shape == (n, cfg.model.embedding_size) and np.abs(got - ref).max() < 1e-4
        assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


def test_only_the_embedding_model_is_exported(tmp_path, faces_by_size):
    path, model, cfg = _checkpoint(tmp_path)
    out = tmp_path / "model.onnx"
    export_checkpoint(path, out, faces=faces_by_size(64))
    from onnx import numpy_helper
    arrays = [numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer]
    assert not any(a.shape == (997, cfg.model.embedding_size) for a in arrays)
    assert not any(a.size > 100 and np.allclose(a, 0.123456) for a in arrays)
    n_model = sum(p.numel() for p in model.parameters())
    assert sum(a.size for a in arrays) < n_model + 10 * 997   # BN folding may add/remove a little, never 997 x D


def test_unsupported_operator_is_a_clear_error(tmp_path):
    class Odd(torch.nn.Module):
        embedding_size = 4

        def forward(self, x):
            return torch.nn.functional.normalize(torch.special.erfcx(x.mean((2, 3))), dim=1)

    with pytest.raises(ExportError, match=r"aten::special_erfcx.*opset version 17.*--format torchscript"):
        export_model(Odd(), tmp_path / "odd.onnx", model_name="odd", image_size=16, normalization="imagenet",
                     check=False)
    assert not (tmp_path / "odd.onnx").exists()   # nothing half-written
    assert list(tmp_path.iterdir()) == []


def test_torchscript_export_is_checked_the_same_way(tmp_path, faces_by_size):
    path, model, _ = _checkpoint(tmp_path)
    out = tmp_path / "model.pt"
    report = export_checkpoint(path, out, fmt="torchscript", faces=faces_by_size(64))
    assert report.max_abs_diff <= 1e-4 and report.num_faces == 6
    extra = {CONTRACT_KEY: ""}
    loaded = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra[CONTRACT_KEY])["model_name"] == report.contract["model_name"]
    x = torch.rand(3, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)


def test_cli_export(tmp_path, capsys, faces_by_size, monkeypatch):
    from fr_lib.cli import main
    import fr_lib.embedders.export as export

    monkeypatch.setattr(export, "verification_faces", lambda size, **kw: faces_by_size(size))
    path, _, _ = _checkpoint(tmp_path, threshold=0.5)
    out = tmp_path / "cli.onnx"
    assert main(["export", "--experiment", str(path), "--format", "onnx", "--opset", "17", str(out)]) == 0
    text = capsys.readouterr().out
    assert "max abs diff" in text and "min cosine" in text and "threshold 0.5" in text
    assert out.is_file() and contract_path(out).is_file()
    assert main(["export", "--experiment", str(path), str(tmp_path / "x.bin")]) == 2
    assert "a .onnx file" in capsys.readouterr().err
    assert main(["export", "--experiment", str(tmp_path / "none.pt"), str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
