"""models_definition: registry, neck maths, facenet / timm weight loading (local files only, never downloads)."""
import os
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

from models_definition import build_backbone, list_backbones

torch.manual_seed(0)


def test_timm_backbone_neck_is_dropout_linear_bn_l2():
    model = build_backbone("resnet10t", embedding_size=16, dropout=0.3).eval()
    x = torch.randn(3, 3, 64, 64)
    features = model.backbone(x)
    with torch.no_grad():
        bn = model.neck.bn
        expected = F.normalize((features @ model.neck.linear.weight.T - bn.running_mean)
                               / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias, dim=1)
        out = model(x)
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    assert (model.backbone_name, model.normalization, model.embedding_size) == ("resnet10t", "imagenet", 16)


def test_mobilenetv3_pre_logits_width():
    # timm quirk: with num_classes=0, mobilenetv3 returns its 1024-wide pre-logits layer, not num_features
    model = build_backbone("mobilenetv3_small_050", embedding_size=8)
    assert model.neck.linear.in_features == model.backbone(torch.zeros(2, 3, 64, 64)).shape[1]
    assert model.neck.linear.in_features != model.backbone.num_features


def test_unknown_backbone_lists_choices():
    with pytest.raises(ValueError, match="inception_resnet_v1.*efficientnet_b0"):
        build_backbone("efficientnet_b00")
    assert list_backbones()[0] == "inception_resnet_v1" and "efficientnet_b0" in list_backbones("efficientnet*")


def test_inception_resnet_v1_local_state_dict_matches_facenet(tmp_path):
    from facenet_pytorch import InceptionResnetV1

    ref = InceptionResnetV1(classify=True, num_classes=7).eval()  # a facenet state dict incl. its logits head
    with torch.no_grad():  # non-trivial BN statistics so the check covers them
        ref.last_bn.running_mean.normal_()
        ref.last_bn.running_var.uniform_(0.5, 2)
    path = tmp_path / "facenet.pt"
    torch.save(ref.state_dict(), path)
    model = build_backbone("inception_resnet_v1", pretrained=str(path)).eval()
    ref.classify = False  # facenet's own embedding path: ... -> last_linear -> last_bn -> L2
    x = torch.randn(2, 3, 80, 80)
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x), atol=1e-5)
    assert (model.normalization, model.default_image_size, model.embedding_size) == ("facenet", 160, 512)
    with pytest.raises(ValueError, match="80 px"):
        model(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="vggface2"):
        build_backbone("inception_resnet_v1", pretrained="imagenet")


def test_inception_resnet_v1_other_embedding_size_gets_new_neck():
    model = build_backbone("inception_resnet_v1", embedding_size=32)
    assert model.neck.linear.weight.shape == (32, 1792)


def test_timm_local_weights_file_goes_through_timm_loader(tmp_path):
    ref = timm.create_model("resnet10t", num_classes=5)
    path = tmp_path / "resnet10t.pth"
    torch.save(ref.state_dict(), path)
    model = build_backbone("resnet10t", embedding_size=8, pretrained=str(path))
    got = model.backbone.state_dict()
    assert all(torch.equal(v, got[k]) for k, v in ref.state_dict().items() if not k.startswith("fc."))


@pytest.mark.parametrize("name", ["vggface2", "casia-webface"])
def test_facenet_pretrained_through_facenet_loader(name):
    cached = Path(os.environ.get("TORCH_HOME", Path(torch.hub.get_dir()).parent)) / "checkpoints"
    if not any(cached.glob(f"*{name}.pt")):
        pytest.skip(f"facenet {name} weights not cached in {cached}; tests never download")
    model = build_backbone("inception_resnet_v1", pretrained=name).eval()
    assert model(torch.zeros(1, 3, 160, 160)).shape == (1, 512)


def test_freeze_backbone_keeps_backbone_in_eval_and_without_grad():
    model = build_backbone("resnet10t", embedding_size=8).freeze_backbone()
    model.train()
    assert not model.backbone.training and model.neck.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.neck.parameters())
