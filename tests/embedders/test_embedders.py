"""resolve_embedder: every branch that runs offline, each checked against building the same model directly."""
from __future__ import annotations

import builtins
import urllib.error

import pytest
import torch

from fr_lib.embedders.dlib_resnet import dlib_available
from fr_lib.embedders.resolve import embedder_choices, resolve_embedder


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("backbone,normalization,image_size", [("test_efficientnet", "imagenet", 112),  # timm's tiny test model
                                                               ("inception_resnet_v1", "facenet", 160)])
def test_random_backbone_is_seed0_build_and_keeps_caller_rng(backbone, normalization, image_size):
    from models_definition import build_backbone

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    model, meta = resolve_embedder(f"random-{backbone}")
    assert torch.equal(torch.rand(3), expected_next)     # the caller's RNG stream is untouched

    torch.manual_seed(0)
    reference = build_backbone(backbone, pretrained=None)
    assert _same_weights(model, reference)
    assert not model.training
    assert meta == {"name": f"random-{backbone}", "kind": "random", "image_size": image_size,
                    "normalization": normalization, "embedding_size": 512, "backbone": backbone,
                    "checkpoint": None, "config": None, "seed": 0}
    assert (meta["image_size"], meta["normalization"]) == (reference.default_image_size, reference.normalization)


def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError, match=r"unknown embedder 'nope'.*dlib-resnet.*random-<backbone>.*my-exp"):
        resolve_embedder("nope", checkpoint_for={"my-exp": "runs/my-exp/best.pt"})
    with pytest.raises(ValueError, match="unknown backbone"):
        resolve_embedder("random-not_a_backbone")
    assert "facenet-vggface2" in embedder_choices()


def test_facenet_offline_is_a_clear_runtime_error(monkeypatch, tmp_path):
    import facenet_pytorch.models.inception_resnet_v1 as irv1

    def offline(url, dst, *a, **k):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))      # no cached weights
    monkeypatch.setattr(irv1, "download_url_to_file", offline)
    for name in ("facenet-vggface2", "facenet-casia-webface"):
        with pytest.raises(RuntimeError, match="could not download"):
            resolve_embedder(name)


def test_dlib_without_the_extra_says_how_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_dlib(name, *args, **kwargs):
        if name == "dlib":
            raise ImportError("No module named 'dlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dlib)
    with pytest.raises(ImportError, match=r"pip install 'fr_lib\[dlib\]'"):
        resolve_embedder("dlib-resnet")


@pytest.mark.skipif(not dlib_available(), reason="dlib baseline not installed: pip install 'fr_lib[dlib]'")
def test_dlib_resnet():
    from fr_lib.embedders.dlib_resnet import DlibResNetEmbedder

    model, meta = resolve_embedder("dlib-resnet")
    assert isinstance(model, DlibResNetEmbedder)
    assert meta == {"name": "dlib-resnet", "kind": "pretrained", "image_size": 150, "normalization": "unit",
                    "embedding_size": 128, "backbone": "dlib_resnet", "checkpoint": None, "config": None}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A checkpoint as fr_lib.training.loop writes it (keys 'model', 'config', ...), for a small random model."""
    checkpoint = pytest.importorskip("fr_lib.training.checkpoint", reason="fr_lib.training.checkpoint not available yet")
    import config
    from models_definition import build_backbone

    cfg = config.get_experiment("arcface-efficientnet", preset="tiny",
                                **{"model.backbone": "test_efficientnet", "data.image_size": 64})
    torch.manual_seed(1)
    model = build_backbone(cfg.model.backbone, embedding_size=cfg.model.embedding_size).eval()
    runs = tmp_path_factory.mktemp("runs")
    path = checkpoint.save_checkpoint(runs / cfg.name / "best.pt",
                                      {"model": model.state_dict(), "config": cfg.to_dict(), "epoch": 1})
    return path, model, cfg


@pytest.mark.parametrize("how", ["path", "str-path", "dict", "callable", "runs_dir"])
def test_checkpoint_branches_load_the_trained_weights(tiny_checkpoint, how):
    path, reference, cfg = tiny_checkpoint
    lookup = {"dict": {cfg.name: path}, "callable": lambda n: {cfg.name: path}[n]}.get(how)
    arg = {"path": path, "str-path": str(path)}.get(how, cfg.name)
    runs_dir = path.parent.parent if how == "runs_dir" else None
    model, meta = resolve_embedder(arg, checkpoint_for=lookup, runs_dir=runs_dir)
    assert _same_weights(model, reference) and not model.training
    if how == "path":  # same weights in eval mode -> same embeddings (checked once: forwards are the slow part)
        x = torch.rand(2, 3, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(model(x), reference(x))
    assert (meta["name"], meta["kind"], meta["checkpoint"]) == (cfg.name, "checkpoint", str(path))
    assert (meta["image_size"], meta["normalization"], meta["embedding_size"]) == (64, "imagenet", 64)
    assert meta["config"]["name"] == cfg.name


def test_registered_experiment_without_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train it first \(fr train my-exp\)"):
        resolve_embedder("my-exp", checkpoint_for={"my-exp": tmp_path / "my-exp" / "best.pt"})
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        resolve_embedder(tmp_path / "missing.pt")


def test_random_backbone_at_a_chosen_input_size():
    model, meta = resolve_embedder("random-efficientnet_b0@64")
    default, default_meta = resolve_embedder("random-efficientnet_b0")
    assert meta["image_size"] == 64 and default_meta["image_size"] == default.default_image_size != 64
    assert meta["name"] == "random-efficientnet_b0@64" and meta["backbone"] == default_meta["backbone"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), default.state_dict().values()))
    with pytest.raises(ValueError, match="whole number of pixels"):
        resolve_embedder("random-efficientnet_b0@big")
