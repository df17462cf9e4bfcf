"""IResNet-18/34/50/100 and MobileFaceNet against insightface arcface_torch's definitions: parameter and layer
counts, the embedding head, forward shapes at 112 px, input-size errors, loading arcface_torch state dicts, and
one tiny training epoch through ``--set model.backbone=...`` (plus timm's vgg16, the twin-network backbone)."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import config
from models_definition import build_backbone, list_backbones
from models_definition.iresnet import IRESNET_LAYERS

# Counted on arcface_torch's backbones/iresnet.py and mobilefacenet.py (get_mbf: blocks (1, 4, 6, 2), scale 2)
# with a 512-d embedding: (all parameters, trainable ones: the ``features`` BatchNorm1d scale is frozen at 1),
# and the number of Conv2d / BatchNorm2d / PReLU modules (plus one Linear and one BatchNorm1d each).
REFERENCE = {
    "iresnet18": (24_025_600, 24_025_088, 21, 30, 9),
    "iresnet34": (34_139_328, 34_138_816, 37, 54, 17),
    "iresnet50": (43_590_848, 43_590_336, 53, 78, 25),
    "iresnet100": (65_156_160, 65_155_648, 103, 153, 50),
    "mobilefacenet": (2_059_520, 2_059_520, 49, 49, 33),
}


def _iresnet_params(layers, embedding_size: int, feature_side: int = 7) -> int:
    """IResNet parameter count in closed form from arcface_torch's definition (BN = 2c parameters, PReLU = c)."""
    total = 3 * 64 * 9 + 2 * 64 + 64                                   # stem conv3x3, BN, PReLU
    c_in = 64
    for c, n in zip((64, 128, 256, 512), layers):
        for b in range(n):
            ci = c_in if b == 0 else c
            total += 2 * ci + 9 * ci * c + 2 * c + c + 9 * c * c + 2 * c   # bn1 conv1 bn2 prelu conv2 bn3
            if b == 0:
                total += ci * c + 2 * c                                   # conv1x1 + BN shortcut
        c_in = c
    flat = 512 * feature_side ** 2
    return total + 2 * 512 + flat * embedding_size + embedding_size + 2 * embedding_size   # bn2, fc, features


def _counts(model):
    mods = list(model.modules())
    return (sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.parameters() if p.requires_grad),
            sum(isinstance(m, nn.Conv2d) for m in mods), sum(isinstance(m, nn.BatchNorm2d) for m in mods),
            sum(isinstance(m, nn.PReLU) for m in mods), sum(isinstance(m, nn.Linear) for m in mods),
            sum(isinstance(m, nn.BatchNorm1d) for m in mods))


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_parameter_and_layer_counts_match_arcface_torch(name):
    model = build_backbone(name, embedding_size=512)
    assert _counts(model) == REFERENCE[name] + (1, 1)
    if name.startswith("iresnet"):
        assert REFERENCE[name][0] == _iresnet_params(IRESNET_LAYERS[int(name[7:])], 512)


def test_iresnet50_is_43_6m_and_head_scales_with_embedding_size():
    assert round(REFERENCE["iresnet50"][0] / 1e6, 1) == 43.6
    assert _counts(build_backbone("iresnet50", embedding_size=128))[0] == 33_955_904 == \
        _iresnet_params(IRESNET_LAYERS[50], 128)
    assert _counts(build_backbone("mobilefacenet", embedding_size=128))[0] == 1_862_144   # arcface_torch's count
    # at 64 px the last map is 4 x 4: only the fc layer shrinks
    assert _counts(build_backbone("iresnet18", embedding_size=64, image_size=64))[0] == \
        _iresnet_params(IRESNET_LAYERS[18], 64, feature_side=4)


@pytest.mark.parametrize("name", ["iresnet18", "mobilefacenet"])
def test_forward_at_112_px_gives_unit_embeddings_through_the_arcface_head(name):
    model = build_backbone(name, embedding_size=32, dropout=0.0).eval()
    assert (model.normalization, model.default_image_size, model.embedding_size) == ("arcface", 112, 32)
    x = torch.randn(3, 3, 112, 112)
    with torch.no_grad():
        out = model(x)
        features = model.backbone(x)
        neck = model.neck
        bn = neck.bn
        linear = features @ neck.linear.weight.T + (neck.linear.bias if neck.linear.bias is not None else 0)
        expected = F.normalize((linear - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight
                               + bn.bias, dim=1)
    assert out.shape == (3, 32) and torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(out, expected, atol=1e-5)     # one head (the neck), no second neck stacked on top
    assert features.shape == (3, 512 * 49 if name.startswith("iresnet") else 512)
    # arcface_torch's heads: IResNet fc with bias, features BN scale frozen at 1; MobileFaceNet GDC linear, no bias
    assert (neck.linear.bias is not None) == name.startswith("iresnet")
    if name.startswith("iresnet"):
        assert not bn.weight.requires_grad and torch.equal(bn.weight, torch.ones(32))


@pytest.mark.parametrize("name", ["iresnet34", "mobilefacenet"])
def test_input_sizes_they_cannot_take_raise_a_clear_error(name):
    model = build_backbone(name, embedding_size=8).eval()
    with pytest.raises(ValueError, match=r"built for \(B, 3, 112, 112\).*image_size=64"):
        model(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="built for"):
        model(torch.zeros(1, 3, 112, 96))
    with pytest.raises(ValueError, match=">= 16"):
        build_backbone(name, image_size=8)
    small = build_backbone(name, embedding_size=8, image_size=64).eval()
    assert small.default_image_size == 64
    with torch.no_grad():
        assert small(torch.zeros(2, 3, 64, 64)).shape == (2, 8)


def _to_insightface(model, kind: str) -> dict:
    """This package's state dict renamed to arcface_torch's key layout (as its backbone.pth files hold)."""
    out = {}
    for k, v in model.state_dict().items():
        if kind == "iresnet":
            k = k.replace("neck.linear.", "fc.").replace("neck.bn.", "features.").removeprefix("backbone.")
        else:
            k = (k.replace("backbone.gdc.", "features.layers.0.").replace("neck.linear.", "features.layers.2.")
                 .replace("neck.bn.", "features.layers.3.").removeprefix("backbone."))
        out[k] = v
    return out


@pytest.mark.parametrize("name,kind,sample_key", [("iresnet18", "iresnet", "layer1.0.downsample.0.weight"),
                                                  ("mobilefacenet", "mbf", "layers.2.layers.1.layers.0.weight")])
def test_arcface_torch_state_dict_loads(tmp_path, name, kind, sample_key):
    ref = build_backbone(name, embedding_size=16).eval()
    with torch.no_grad():   # non-trivial statistics so the check covers every buffer
        for m in ref.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2)
    state = _to_insightface(ref, kind)
    assert sample_key in state            # a key of arcface_torch's own layout
    path = tmp_path / "backbone.pth"
    torch.save(state, path)
    torch.manual_seed(1)
    model = build_backbone(name, embedding_size=16, pretrained=str(path)).eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))
    torch.save(ref.state_dict(), tmp_path / "own.pt")       # this package's layout loads too
    assert torch.equal(build_backbone(name, embedding_size=16, pretrained=str(tmp_path / "own.pt")).eval()(x), ref(x))
    with pytest.raises(ValueError, match="another shape"):   # weights for 112 px / 16-d into a 64 px / 32-d model
        build_backbone(name, embedding_size=32, pretrained=str(path), image_size=64)
    with pytest.raises(ValueError, match="state-dict file"):
        build_backbone(name, pretrained="imagenet")


def test_registry_names_and_unknown_depth():
    names = list_backbones()
    assert names[0] == "inception_resnet_v1"
    assert {"iresnet18", "iresnet34", "iresnet50", "iresnet100", "mobilefacenet"} <= set(names)
    assert list_backbones("iresnet*") == ["iresnet18", "iresnet34", "iresnet50", "iresnet100"]
    with pytest.raises(ValueError, match="iresnet50"):
        build_backbone("iresnet51")


def _train_tiny(root, out, backbone: str, image_size: int, check_val: bool = True, **extra):
    from fr_lib.training.checkpoint import load_embedder
    from fr_lib.training.loop import train

    overrides = config.parse_overrides([f"model.backbone={backbone}"])   # what `fr train --set` passes
    cfg = config.get_experiment("arcface-efficientnet", "tiny", **{
        **overrides, "data.root": str(root), "data.image_size": image_size, "train.output_dir": str(out), **extra})
    summary = train(cfg, progress=False)
    (row,) = summary["history"]
    assert math.isfinite(row["train_loss"]) and (math.isfinite(row["val_loss"]) or not check_val)
    model, meta = load_embedder(summary["best_checkpoint"])
    assert meta["backbone"] == backbone and meta["image_size"] == image_size
    with torch.no_grad():
        emb = model(torch.randn(2, 3, image_size, image_size))
    assert emb.shape == (2, cfg.model.embedding_size)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    return model


@pytest.mark.parametrize("backbone", ["mobilefacenet", "iresnet18"])
def test_face_backbones_train_one_tiny_epoch(backbone, synth_root, tmp_path):
    model = _train_tiny(synth_root, tmp_path / backbone, backbone, 32,
                        **{"data.max_identities": 10, "data.max_images_per_identity": 5, "data.val_fraction": 0.2})
    assert model.normalization == "arcface" and model.default_image_size == 32


@pytest.mark.slow
def test_vgg16_trains_and_embeds_at_32_px(synth_root, tmp_path):
    # timm's vgg16: 5 max-pools leave 1 x 1 at 32 px; its 7x7 pre-logits conv pools the map up to 7 x 7, and
    # the neck takes the 4096-wide pre-logits output (head_hidden_size), not num_features (512). 134M parameters:
    # a few steps of batch 2 and plain SGD (no momentum buffers in the checkpoint) keep it to seconds on an idle CPU
    model = _train_tiny(synth_root, tmp_path / "vgg16", "vgg16", 32, check_val=False,
                        **{"data.batch_size": 2, "data.max_identities": 4, "data.max_images_per_identity": 3,
                           "model.embedding_size": 16, "optim.momentum": 0.0, "optim.weight_decay": 0.0})
    assert model.neck.linear.in_features == 4096
