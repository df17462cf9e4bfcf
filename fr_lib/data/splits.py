"""Deterministic splits: closed-set (images of each identity stratified into train/val) and open-set
(identity-disjoint train vs evaluation identities, the latter split into query and distractor identities)."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from fr_lib.data.scan import FolderIndex

Samples = list[tuple[str, int]]


def _samples(index_or_samples) -> Samples:
    return list(index_or_samples.samples if isinstance(index_or_samples, FolderIndex) else index_or_samples)


def _by_label(samples: Samples) -> dict[int, list[tuple[str, int]]]:
    groups = defaultdict(list)
    for s in samples:
        groups[s[1]].append(s)
    return dict(sorted(groups.items()))


def closed_set_split(index_or_samples, val_fraction: float, seed: int = 0) -> tuple[Samples, Samples]:
    """Per identity, floor(n * val_fraction + 0.5) images (at most n - 1) go to val, the rest to train.

    Every val identity also appears in train (classification accuracy needs it). Which images go where depends only
    on (seed, label, that identity's files), so adding identities does not reshuffle the others. Order: by label,
    then file order. Returns (train_samples, val_samples).
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    train, val = [], []
    for label, group in _by_label(_samples(index_or_samples)).items():
        n = len(group)
        n_val = min(int(np.floor(n * val_fraction + 0.5)), n - 1)
        pick = set(np.random.default_rng([seed, label]).permutation(n)[:n_val].tolist())
        for j, s in enumerate(group):
            (val if j in pick else train).append(s)
    return train, val


@dataclass
class OpenSetSplit:
    """Identity-disjoint split. ``train`` labels are re-indexed 0..C-1 (names in ``train_classes``); ``query`` and
    ``distractors`` keep the index's labels (identity ids for the ID-rate protocol)."""
    train: Samples
    query: Samples
    distractors: Samples
    train_classes: list[str]
    query_classes: list[str]
    distractor_classes: list[str]


def open_set_split(index: FolderIndex, eval_identity_fraction: float = 0.2, distractor_fraction: float = 0.5,
                   seed: int = 0) -> OpenSetSplit:
    """Hold out round(C * eval_identity_fraction) identities (at least 1 when the fraction is > 0) from training;
    round(held_out * distractor_fraction) of them become distractors, the others query identities.

    Query identities are preferably those with >= 2 images (a query identity needs pairs). Deterministic by seed.
    """
    if not 0 <= eval_identity_fraction < 1 or not 0 <= distractor_fraction <= 1:
        raise ValueError(f"need 0 <= eval_identity_fraction < 1 and 0 <= distractor_fraction <= 1, got "
                         f"{eval_identity_fraction}, {distractor_fraction}")
    groups = _by_label(index.samples)
    labels = list(groups)
    c = len(labels)
    n_eval = int(round(c * eval_identity_fraction))
    if eval_identity_fraction > 0:
        n_eval = max(n_eval, 1)
    if n_eval >= c:
        raise ValueError(f"open-set split of {c} identities leaves no training identity "
                         f"(eval_identity_fraction={eval_identity_fraction})")
    perm = [labels[i] for i in np.random.default_rng(seed).permutation(c)]
    held, train_ids = perm[:n_eval], sorted(perm[n_eval:])
    n_dis = int(round(n_eval * distractor_fraction))
    held.sort(key=lambda lab: len(groups[lab]) < 2)  # stable: identities with pairs first, else permutation order
    query_ids, dis_ids = sorted(held[:n_eval - n_dis]), sorted(held[n_eval - n_dis:])
    train = [(p, new) for new, lab in enumerate(train_ids) for p, _ in groups[lab]]
    names = index.classes
    return OpenSetSplit(train=train,
                        query=[s for lab in query_ids for s in groups[lab]],
                        distractors=[s for lab in dis_ids for s in groups[lab]],
                        train_classes=[names[lab] for lab in train_ids],
                        query_classes=[names[lab] for lab in query_ids],
                        distractor_classes=[names[lab] for lab in dis_ids])
