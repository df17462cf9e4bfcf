"""IResNet-18/34/50/100: the face backbones of insightface's arcface_torch (backbones/iresnet.py).

Architecture as arcface_torch defines it (Deng et al., ArcFace, CVPR 2019, "improved residual" blocks):
  stem:   conv3x3(3 -> 64, stride 1) -> BN -> PReLU
  stages: 64, 128, 256, 512 channels; each stage's first IBasicBlock has stride 2 (and a conv1x1 + BN shortcut)
  IBasicBlock: BN -> conv3x3 -> BN -> PReLU -> conv3x3 (stride) -> BN, + shortcut (no activation after the sum)
  head:   BN2d -> flatten (512 x 7 x 7 at 112 px) -> dropout -> linear (with bias) -> BatchNorm1d ``features``
          (its scale fixed at 1 and not trained)
Blocks per stage: 18 [2, 2, 2, 2], 34 [3, 4, 6, 3], 50 [3, 4, 14, 3], 100 [3, 13, 30, 3].
IResNet-50 with a 512-d embedding has 43,590,848 parameters (43,590,336 trainable), as in arcface_torch.

Here the stem, the stages and the head's BN2d + flatten are the backbone (IResNetTrunk); the head's
dropout -> linear -> BatchNorm1d is the EmbeddingNeck every backbone shares (given a biased linear layer and the
frozen-scale batchnorm, so the head is exactly arcface_torch's), followed by the neck's L2 normalisation. No second
neck is stacked on top of the network's own head.

The head flattens the last feature map, so the linear layer's width fixes the input size: arcface_torch's 112 px
gives 7 x 7 maps. ``image_size`` builds the linear layer for another size (each stride-2 stage takes a side n to
ceil(n / 2), so the last map is ceil(image_size / 16) on a side); a model rejects any other input size with a
ValueError that names the size it was built for.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from models_definition.neck import EmbeddingModel, EmbeddingNeck

IRESNET_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}
ARCFACE_IMAGE_SIZE = 112      # insightface's aligned crops; 7 x 7 maps before the head
MIN_IMAGE_SIZE = 16           # four stride-2 stages: 16 px leaves a 1 x 1 map
BN_EPS = 1e-5


def feature_side(image_size: int) -> int:
    """Side of the last feature map for square inputs of ``image_size`` px (four stride-2 stages: ceil(n / 16))."""
    return math.ceil(image_size / 16)


def check_image_size(name: str, image_size) -> int:
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"{name}: image_size must be a whole number of pixels >= {MIN_IMAGE_SIZE}, "
                         f"got {image_size!r}")
    return image_size


def check_input(name: str, x: torch.Tensor, image_size: int) -> None:
    """ValueError unless x is (B, 3, image_size, image_size): the head's width was fixed by image_size."""
    if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (image_size, image_size):
        raise ValueError(f"{name} was built for (B, 3, {image_size}, {image_size}) images (its embedding head "
                         f"flattens a {feature_side(image_size)} x {feature_side(image_size)} feature map); got "
                         f"{tuple(x.shape)}. Resize the images to {image_size} px, or build the model with "
                         f"build_backbone(..., image_size={x.shape[-1]}) (fr train passes data.image_size)")


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus the shortcut: (B, c_in, H, W) ->
    (B, c_out, ceil(H / stride), ceil(W / stride)). Attribute names follow arcface_torch (its state dicts load)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in, eps=BN_EPS)
        self.conv1 = _conv3x3(c_in, c_out)
        self.bn2 = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.prelu = nn.PReLU(c_out)
        self.conv2 = _conv3x3(c_out, c_out, stride)
        self.bn3 = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False),
                                            nn.BatchNorm2d(c_out, eps=BN_EPS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNetTrunk(nn.Module):
    """Stem + four stages + the head's BN2d, flattened: (B, 3, S, S) -> (B, 512 * ceil(S/16)^2), S = image_size."""

    def __init__(self, layers: tuple[int, ...], image_size: int = ARCFACE_IMAGE_SIZE, name: str = "iresnet"):
        super().__init__()
        self.name, self.image_size = name, image_size
        self.conv1 = _conv3x3(3, 64)
        self.bn1 = nn.BatchNorm2d(64, eps=BN_EPS)
        self.prelu = nn.PReLU(64)
        c_in = 64
        for k, (c_out, n_blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            blocks = [IBasicBlock(c_in, c_out, stride=2)] + [IBasicBlock(c_out, c_out) for _ in range(n_blocks - 1)]
            setattr(self, f"layer{k}", nn.Sequential(*blocks))
            c_in = c_out
        self.bn2 = nn.BatchNorm2d(512, eps=BN_EPS)
        self.num_features = 512 * feature_side(image_size) ** 2
        # arcface_torch's initialisation: conv weights N(0, 0.1), batchnorm scale 1 and shift 0
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self.name, x, self.image_size)
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.bn2(x), 1)


def arcface_head(in_features: int, embedding_size: int, dropout: float, bias: bool) -> EmbeddingNeck:
    """dropout -> linear -> BatchNorm1d whose scale is fixed at 1 (arcface_torch's ``features``), then L2."""
    bn = nn.BatchNorm1d(embedding_size, eps=BN_EPS)
    nn.init.ones_(bn.weight)
    bn.weight.requires_grad_(False)
    return EmbeddingNeck(in_features, embedding_size, dropout,
                         linear=nn.Linear(in_features, embedding_size, bias=bias), bn=bn)


def insightface_keys(state: dict) -> dict:
    """arcface_torch IResNet state dict -> this module's keys: ``fc.*`` -> ``neck.linear.*``, ``features.*`` ->
    ``neck.bn.*``, everything else under ``backbone.``."""
    out = {}
    for k, v in state.items():
        if k.startswith("fc."):
            out["neck.linear." + k[3:]] = v
        elif k.startswith("features."):
            out["neck.bn." + k[9:]] = v
        else:
            out["backbone." + k] = v
    return out


def load_pretrained_file(model: EmbeddingModel, name: str, pretrained, convert) -> None:
    """``pretrained`` of an arcface_torch backbone: None/False (random init) or a local state-dict file, loaded by
    load_insightface_state; anything else raises ValueError."""
    if pretrained in (None, False):
        return
    from models_definition.backbones import _is_file

    if not _is_file(pretrained):
        raise ValueError(f"{name}: pretrained must be None or an existing arcface_torch state-dict file "
                         f"(e.g. insightface's backbone.pth), got {pretrained!r}")
    load_insightface_state(model, pretrained, convert)


def load_insightface_state(model: EmbeddingModel, path, convert) -> None:
    """Load a local arcface_torch state-dict file (``backbone.pth`` of its model zoo) into ``model``; tensors only
    (weights_only=True), so a downloaded file cannot run code. A file already in this package's layout (a
    ``state_dict()`` of a model built here) loads as it is."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    if not any(k.startswith("backbone.") for k in state):
        state = convert(state)
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (model: {tuple(own[k].shape)})" for k, v in state.items()
             if k in own and own[k].shape != v.shape]
    if wrong:
        raise ValueError(f"{path}: weights of another shape, e.g. {wrong[:3]}; insightface's weights are for "
                         f"{ARCFACE_IMAGE_SIZE} px inputs and their embedding size (build with those)")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} is not a {model.backbone_name} state dict: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")


def build_iresnet(depth: int, embedding_size: int = 512, pretrained=None, dropout: float = 0.0,
                  image_size: int | None = None) -> EmbeddingModel:
    """IResNet-``depth`` (18, 34, 50, 100): (B, 3, S, S) images standardised to [-1, 1] ('arcface'
    normalisation) -> L2-normalised (B, embedding_size). S = image_size (default 112 px, arcface_torch's).

    pretrained: None, or a local arcface_torch state-dict file (loaded with weights_only=True). insightface
    publishes no download API for its weights, so there is no named tag to fetch.
    """
    name = f"iresnet{depth}"
    if depth not in IRESNET_LAYERS:
        raise ValueError(f"no IResNet of depth {depth}; choose one of {sorted(IRESNET_LAYERS)}")
    image_size = check_image_size(name, ARCFACE_IMAGE_SIZE if image_size is None else image_size)
    trunk = IResNetTrunk(IRESNET_LAYERS[depth], image_size, name)
    model = EmbeddingModel(trunk, arcface_head(trunk.num_features, embedding_size, dropout, bias=True),
                           backbone_name=name, normalization="arcface", default_image_size=image_size)
    load_pretrained_file(model, name, pretrained, insightface_keys)
    return model
