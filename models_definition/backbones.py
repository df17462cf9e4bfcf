"""Backbone registry: any timm model name, facenet-pytorch's ``inception_resnet_v1``, and insightface
arcface_torch's face backbones ``iresnet18`` / ``iresnet34`` / ``iresnet50`` / ``iresnet100`` / ``mobilefacenet``.

An unknown name raises ValueError with the special names and the closest timm names.
"""
from __future__ import annotations

import difflib
import fnmatch
import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from models_definition.iresnet import IRESNET_LAYERS, build_iresnet
from models_definition.mobilefacenet import build_mobilefacenet
from models_definition.neck import EmbeddingModel, EmbeddingNeck

FACENET_PRETRAINED = ("vggface2", "casia-webface")
TIMM_DEFAULT_IMAGE_SIZE = 112   # insightface's aligned-crop size; timm's 224 is for ImageNet
FACENET_IMAGE_SIZE = 160        # facenet-pytorch's MTCNN crop size
FACENET_MIN_IMAGE_SIZE = 80     # smaller inputs shrink to nothing before InceptionResnetV1's last blocks


class FacenetTrunk(nn.Module):
    """facenet-pytorch InceptionResnetV1 up to global average pooling: (B, 3, H>=80, W>=80) -> (B, 1792).

    Hand-written forward because facenet's own forward always applies its head (dropout, last_linear,
    last_bn) and then either logits or L2 normalisation; the head moves into our EmbeddingNeck instead.
    """

    LAYERS = ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "conv2d_4b",
              "repeat_1", "mixed_6a", "repeat_2", "mixed_7a", "repeat_3", "block8", "avgpool_1a")
    num_features = 1792

    def __init__(self, net: nn.Module):
        super().__init__()
        for name in self.LAYERS:
            setattr(self, name, getattr(net, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < FACENET_MIN_IMAGE_SIZE:
            raise ValueError(f"inception_resnet_v1 needs images of at least {FACENET_MIN_IMAGE_SIZE} px, got "
                             f"{tuple(x.shape[-2:])}")
        for name in self.LAYERS:
            x = getattr(self, name)(x)
        return torch.flatten(x, 1)


def _build_inception_resnet_v1(embedding_size: int, pretrained, dropout: float, image_size=None) -> EmbeddingModel:
    from facenet_pytorch import InceptionResnetV1

    if image_size is not None and image_size < FACENET_MIN_IMAGE_SIZE:  # fail at build, not at the first batch
        raise ValueError(f"inception_resnet_v1 needs images of at least {FACENET_MIN_IMAGE_SIZE} px, got "
                         f"image_size={image_size}")
    if pretrained in (None, False):
        net = InceptionResnetV1(pretrained=None, dropout_prob=dropout)
    elif pretrained in FACENET_PRETRAINED:
        try:  # facenet's own loader: downloads into $TORCH_HOME/checkpoints once
            net = InceptionResnetV1(pretrained=pretrained, dropout_prob=dropout)
        except OSError as e:  # URLError is an OSError
            raise RuntimeError(
                f"could not download facenet-pytorch {pretrained!r} weights ({e}); offline, download the .pt file "
                f"from https://github.com/timesler/facenet-pytorch/releases/tag/v2.2.9 and pass its path as "
                f"pretrained") from e
    elif _is_file(pretrained):
        net = InceptionResnetV1(pretrained=None, dropout_prob=dropout)
        state = torch.load(pretrained, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("logits.")}  # the old classifier head
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{pretrained} is not an InceptionResnetV1 state dict: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    else:
        raise ValueError(f"inception_resnet_v1: pretrained must be None, one of {FACENET_PRETRAINED} or an "
                         f"existing state-dict file, got {pretrained!r}")
    if embedding_size == 512:  # keep facenet's trained head so a pretrained model gives facenet's embeddings
        neck = EmbeddingNeck(1792, 512, dropout, linear=net.last_linear, bn=net.last_bn)
    else:
        neck = EmbeddingNeck(1792, embedding_size, dropout)
    return EmbeddingModel(FacenetTrunk(net), neck, backbone_name="inception_resnet_v1", normalization="facenet",
                          default_image_size=FACENET_IMAGE_SIZE)


def _build_timm(name: str, embedding_size: int, pretrained, dropout: float) -> EmbeddingModel:
    """Any timm model with num_classes=0 (timm's pooled features, or its pre-logits layer) + EmbeddingNeck. Small
    inputs work where timm allows them: vgg16's 7x7 pre-logits conv pools smaller maps up to 7x7 itself, so it
    embeds at 32 px (5 max-pools: 32 px is its smallest sensible size), and its pre-logits width is 4096."""
    import timm

    if pretrained in (None, False):
        kw = {"pretrained": False}
    elif pretrained in (True, "imagenet"):
        kw = {"pretrained": True}  # timm's default pretrained tag for that name (needs the network)
    elif _is_file(pretrained):     # timm's own loader drops the classifier since num_classes=0
        kw = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(pretrained)}}
    else:
        raise ValueError(f"{name}: pretrained must be None, 'imagenet' or an existing weights file, "
                         f"got {pretrained!r}")
    backbone = timm.create_model(name, num_classes=0, **kw)
    # timm quirk: with num_classes=0 some models (mobilenetv3) return their pre-logits layer, whose width is
    # head_hidden_size (1024), not num_features (576)
    width = getattr(backbone, "head_hidden_size", None) or backbone.num_features
    neck = EmbeddingNeck(width, embedding_size, dropout)
    return EmbeddingModel(backbone, neck, backbone_name=name, normalization="imagenet",
                          default_image_size=TIMM_DEFAULT_IMAGE_SIZE)


# name -> builder(embedding_size, pretrained, dropout, image_size)
_SPECIAL: dict[str, Callable[..., EmbeddingModel]] = {
    "inception_resnet_v1": _build_inception_resnet_v1,
    **{f"iresnet{d}": (lambda e, p, dr, s, d=d: build_iresnet(d, e, p, dr, s)) for d in IRESNET_LAYERS},
    "mobilefacenet": build_mobilefacenet,
}


def list_backbones(pattern: str = "") -> list[str]:
    """Names build_backbone accepts: the special ones, then timm's (``timm.list_models(pattern)``)."""
    import timm

    special = [n for n in _SPECIAL if not pattern or fnmatch.fnmatch(n, pattern)]
    return special + timm.list_models(pattern or "*")


def build_backbone(name: str = "efficientnet_b0", embedding_size: int = 512, pretrained=None,
                   dropout: float = 0.0, image_size: int | None = None) -> EmbeddingModel:
    """Backbone + embedding neck mapping (B, 3, H, W) standardised images to L2-normalised (B, embedding_size).

    name: 'inception_resnet_v1' (facenet-pytorch), 'iresnet18' | 'iresnet34' | 'iresnet50' | 'iresnet100' |
        'mobilefacenet' (insightface arcface_torch; their own BN-dropout-FC-BN head is the neck, see
        models_definition.iresnet) or any timm model name (``timm.list_models()``).
    pretrained: None; 'imagenet' (timm); 'vggface2' | 'casia-webface' (inception_resnet_v1, facenet's loader);
        or a path to a local weights file (timm: loaded by timm; inception_resnet_v1: a facenet state dict;
        iresnet* / mobilefacenet: an arcface_torch state dict such as insightface's backbone.pth).
    dropout: probability on the pooled features before the neck's linear layer.
    image_size: input side in px for the backbones whose head fixes it (iresnet*, mobilefacenet: default 112;
        their ``default_image_size`` becomes this); the others accept any size above their minimum and ignore it.
    """
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a whole number of pixels >= 1, got {image_size!r}")
    if name in _SPECIAL:
        return _SPECIAL[name](embedding_size, pretrained, dropout, image_size)
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, list_backbones(), n=8, cutoff=0.6)
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(_SPECIAL)} or a timm model name "
                         f"(list_backbones() / timm.list_models()); closest: {close or ['efficientnet_b0']}")
    return _build_timm(name, embedding_size, pretrained, dropout)


def _is_file(p) -> bool:
    return isinstance(p, (str, os.PathLike)) and Path(p).is_file()
