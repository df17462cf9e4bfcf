"""MobileFaceNet as insightface's arcface_torch defines it (backbones/mobilefacenet.py, ``mbf``: blocks (1, 4, 6, 2),
width scale 2; Chen et al., MobileFaceNets, 2018, with arcface_torch's doubled widths).

  stem:  ConvBlock 3x3 stride 2 (3 -> 128), then a depthwise 3x3 ConvBlock (groups 64)
  body:  DepthWise(stride 2, 128 -> 128, expansion 128) + Residual x4 (expansion 128),
         DepthWise(stride 2, 128 -> 256, expansion 256) + Residual x6 (expansion 256),
         DepthWise(stride 2, 256 -> 256, expansion 512) + Residual x2 (expansion 256)
  conv_sep: ConvBlock 1x1 (256 -> 512)
  head (GDC): depthwise 7x7 LinearBlock over the 7 x 7 map (112 px) -> flatten -> linear (no bias) -> BatchNorm1d
ConvBlock = conv -> BN -> PReLU; LinearBlock = conv -> BN; DepthWise = 1x1 ConvBlock (expand) -> depthwise 3x3
ConvBlock -> 1x1 LinearBlock (project), with the input added back in Residual blocks.
With a 512-d embedding the network has 2,059,520 parameters, as in arcface_torch.

The GDC's depthwise conv is part of the backbone (MobileFaceNetTrunk: (B, 3, S, S) -> (B, 512)); its linear ->
BatchNorm1d is exactly the shared EmbeddingNeck (dropout 0 by default), followed by L2 normalisation. The GDC
kernel covers the whole last map, so it is built for one input size: ``image_size`` (default 112 px) sets the
kernel to ceil(image_size / 16); other input sizes raise a ValueError naming the size the model was built for.
"""
from __future__ import annotations

import torch
from torch import nn

from models_definition.iresnet import (
    ARCFACE_IMAGE_SIZE,
    check_image_size,
    check_input,
    feature_side,
    load_pretrained_file,
)
from models_definition.neck import EmbeddingModel, EmbeddingNeck

MBF_BLOCKS = (1, 4, 6, 2)
MBF_SCALE = 2


class _Seq(nn.Module):
    """A block holding its layers in ``.layers`` (arcface_torch's layout, so its state dicts keep their keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ConvBlock(_Seq):
    """conv (no bias) -> BN -> PReLU."""

    def __init__(self, c_in, c_out, kernel=1, stride=1, padding=0, groups=1):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups, bias=False),
                                    nn.BatchNorm2d(c_out), nn.PReLU(c_out))


class LinearBlock(_Seq):
    """conv (no bias) -> BN, no activation (the linear bottleneck)."""

    def __init__(self, c_in, c_out, kernel=1, stride=1, padding=0, groups=1):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups, bias=False),
                                    nn.BatchNorm2d(c_out))


class DepthWise(nn.Module):
    """1x1 expand to ``hidden`` -> depthwise 3x3 (stride) -> 1x1 project to c_out; + x when ``residual``."""

    def __init__(self, c_in: int, c_out: int, hidden: int, stride: int = 1, residual: bool = False):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(ConvBlock(c_in, hidden), ConvBlock(hidden, hidden, 3, stride, 1, groups=hidden),
                                    LinearBlock(hidden, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(x)
        return x + y if self.residual else y


class Residual(_Seq):
    """``n_blocks`` residual DepthWise blocks at constant width c."""

    def __init__(self, c: int, n_blocks: int, hidden: int):
        super().__init__()
        self.layers = nn.Sequential(*[DepthWise(c, c, hidden, residual=True) for _ in range(n_blocks)])


class MobileFaceNetTrunk(nn.Module):
    """(B, 3, S, S) -> (B, 512): the body, conv_sep and the GDC's depthwise conv over the whole last map."""

    def __init__(self, image_size: int = ARCFACE_IMAGE_SIZE, blocks=MBF_BLOCKS, scale: int = MBF_SCALE,
                 name: str = "mobilefacenet"):
        super().__init__()
        self.name, self.image_size = name, image_size
        c1, c2 = 64 * scale, 128 * scale
        stem2 = (ConvBlock(c1, c1, 3, 1, 1, groups=64) if blocks[0] == 1 else Residual(c1, blocks[0], 128))
        self.layers = nn.ModuleList([
            ConvBlock(3, c1, 3, 2, 1), stem2,
            DepthWise(c1, c1, 128, stride=2), Residual(c1, blocks[1], 128),
            DepthWise(c1, c2, 256, stride=2), Residual(c2, blocks[2], 256),
            DepthWise(c2, c2, 512, stride=2), Residual(c2, blocks[3], 256)])
        self.conv_sep = ConvBlock(c2, 512)
        side = feature_side(image_size)
        self.gdc = LinearBlock(512, 512, kernel=side, groups=512)
        self.num_features = 512
        # arcface_torch's initialisation: Kaiming normal (fan_out) convs, batchnorm scale 1 and shift 0
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self.name, x, self.image_size)
        for layer in self.layers:
            x = layer(x)
        return torch.flatten(self.gdc(self.conv_sep(x)), 1)


def insightface_keys(state: dict) -> dict:
    """arcface_torch MobileFaceNet state dict -> this module's keys: the GDC's ``features.layers.0`` (depthwise
    conv + BN), ``.2`` (linear) and ``.3`` (BatchNorm1d) become ``backbone.gdc``, ``neck.linear`` and ``neck.bn``;
    everything else keeps its name under ``backbone.``."""
    rename = {"features.layers.0.": "backbone.gdc.", "features.layers.2.": "neck.linear.",
              "features.layers.3.": "neck.bn."}
    out = {}
    for k, v in state.items():
        prefix = next((p for p in rename if k.startswith(p)), None)
        out[rename[prefix] + k[len(prefix):] if prefix else "backbone." + k] = v
    return out


def build_mobilefacenet(embedding_size: int = 512, pretrained=None, dropout: float = 0.0,
                        image_size: int | None = None) -> EmbeddingModel:
    """MobileFaceNet: (B, 3, S, S) images standardised to [-1, 1] ('arcface' normalisation) -> L2-normalised
    (B, embedding_size); S = image_size (default 112 px). pretrained: None or a local arcface_torch state dict."""
    image_size = check_image_size("mobilefacenet", ARCFACE_IMAGE_SIZE if image_size is None else image_size)
    trunk = MobileFaceNetTrunk(image_size)
    neck = EmbeddingNeck(trunk.num_features, embedding_size, dropout)
    nn.init.kaiming_normal_(neck.linear.weight, mode="fan_out", nonlinearity="relu")
    model = EmbeddingModel(trunk, neck, backbone_name="mobilefacenet", normalization="arcface",
                           default_image_size=image_size)
    load_pretrained_file(model, "mobilefacenet", pretrained, insightface_keys)
    return model
