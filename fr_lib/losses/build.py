"""build_criterion: a criterion from a loss config (config.LossConfig) or a loss name, through the LOSSES registry.

A new loss registers with one entry in LOSSES: name -> factory(num_classes, embedding_size, **options). The
factory's keyword parameters are the options the loss takes, with their defaults; nothing here lists them again.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Callable

from torch import nn

from fr_lib.losses import classification, group, pair_classifier, pairs

LOSSES: dict[str, Callable[..., nn.Module]] = {
    "ce": classification.SoftmaxCrossEntropy,     # label_smoothing, scale (on the unit embeddings, default 1)
    "arcface": classification.arcface,            # margin in radians (0.5), scale (64)
    "cosface": classification.cosface,            # margin in cosine units (0.35), scale (64)
    "triplet": pairs.triplet,                     # margin (0.2, Euclidean between unit vectors), mining
    "contrastive": pairs.contrastive,             # margin (1.0, negatives)
    "bce": pair_classifier.bce,                   # learned pair classifier on |e1 - e2|, no options
    "group": group.group,                         # scale (16)
}


def loss_options(name: str) -> dict:
    """{option: default} of a registered loss, read from its factory's signature."""
    params = list(inspect.signature(_factory(name)).parameters.values())[2:]   # after num_classes, embedding_size
    return {p.name: p.default for p in params}


def build_criterion(loss, num_classes: int, embedding_size: int, **options) -> nn.Module:
    """criterion(embeddings (B, embedding_size), labels (B,)) -> scalar loss.

    loss: a loss config (config.LossConfig or any object with ``name`` and option attributes) or a name of
    LOSSES. From a config, the fields that differ from the config class's own defaults are passed (a field
    left at its default, e.g. margin=None, means "the loss's default"); ``options`` (None = the loss's
    default) are passed on top. An option the loss does not take raises ValueError naming the ones it does.
    """
    name, given = (loss, {}) if isinstance(loss, str) else (loss.name, _set_fields(loss))
    given.update({k: v for k, v in options.items() if v is not None})
    accepted = loss_options(name)
    stray = {k: v for k, v in given.items() if k not in accepted}
    if stray:
        raise ValueError(f"loss {name!r} does not use {stray}; it takes {sorted(accepted) or 'no options'}")
    return LOSSES[name](num_classes, embedding_size, **given)


def _factory(name: str):
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name]


def _set_fields(cfg) -> dict:
    """The option fields of a loss config that are set: for a dataclass those that differ from the class's
    defaults, otherwise those that are not None."""
    if dataclasses.is_dataclass(cfg):
        out = {}
        for f in dataclasses.fields(cfg):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            value = getattr(cfg, f.name)
            if f.name != "name" and value is not None and value != default:
                out[f.name] = value
        return out
    return {k: v for k, v in vars(cfg).items() if k != "name" and not k.startswith("_") and v is not None}
