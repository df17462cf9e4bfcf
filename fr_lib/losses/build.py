"""build_criterion: a criterion by name from the options of config.LossConfig."""
from __future__ import annotations

from torch import nn

from fr_lib.losses import classification, group, pair_classifier, pairs
from fr_lib.losses.classification import SoftmaxCrossEntropy


def _ce(num_classes, embedding_size, label_smoothing=0.0, scale=None):
    return SoftmaxCrossEntropy(num_classes, embedding_size, label_smoothing, 1.0 if scale is None else scale)


def _with_defaults(factory):
    """Drop margin/scale given as None so the factory's own default applies."""
    def build(num_classes, embedding_size, **kw):
        return factory(num_classes, embedding_size, **{k: v for k, v in kw.items() if v is not None})
    return build


# name -> (factory, options it takes)
LOSSES = {
    "ce": (_ce, {"label_smoothing", "scale"}),
    "arcface": (_with_defaults(classification.arcface), {"margin", "scale"}),
    "cosface": (_with_defaults(classification.cosface), {"margin", "scale"}),
    "triplet": (_with_defaults(pairs.triplet), {"margin", "mining"}),
    "contrastive": (_with_defaults(pairs.contrastive), {"margin"}),
    "bce": (pair_classifier.bce, set()),
    "group": (_with_defaults(group.group), {"scale"}),
}
# options passed with these values count as "not set" (config.LossConfig's defaults)
_UNSET = {"margin": None, "scale": None, "label_smoothing": 0.0, "mining": "batch_hard"}


def build_criterion(name: str, num_classes: int, embedding_size: int, **options) -> nn.Module:
    """criterion(embeddings (B, embedding_size), labels (B,)) -> scalar loss.

    name: 'ce' (label_smoothing, scale), 'arcface' (margin in radians, default 0.5; scale, default 64),
    'cosface' (margin in cosine units, default 0.35; scale 64), 'triplet' (margin 0.2 in Euclidean distance
    between unit vectors; mining 'batch_hard' | 'semi_hard' | 'all'), 'contrastive' (negative margin 1.0),
    'bce' (learned pair classifier on |e1 - e2|, no options), 'group' (group loss; scale, default 16).
    An option the loss does not use raises ValueError unless it has its unset value (see _UNSET).
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    factory, accepted = LOSSES[name]
    unknown = set(options) - set(_UNSET)
    if unknown:
        raise ValueError(f"unknown loss option(s) {sorted(unknown)}; known: {sorted(_UNSET)}")
    stray = {k: v for k, v in options.items() if k not in accepted and v != _UNSET[k]}
    if stray:
        raise ValueError(f"loss {name!r} does not use {stray}; it takes {sorted(accepted)}")
    return factory(num_classes, embedding_size, **{k: v for k, v in options.items() if k in accepted})
