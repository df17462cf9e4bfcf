"""closed_set_split and open_set_split: disjointness, stratification, label bookkeeping, determinism."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from fr_lib.data import FolderIndex, closed_set_split, open_set_split


def _index(counts):
    classes = [f"p{i:03d}" for i in range(len(counts))]
    samples = [(f"{c}/{j:04d}.jpg", i) for i, (c, n) in enumerate(zip(classes, counts)) for j in range(n)]
    return FolderIndex(root=None, samples=samples, classes=classes)


COUNTS = [1, 2, 3, 5, 10, 10, 17, 40, 4, 6, 9, 2]


@pytest.mark.parametrize("val_fraction", [0.0, 0.1, 0.25, 0.5])
def test_closed_set_split_is_a_stratified_partition(val_fraction):
    index = _index(COUNTS)
    train, val = closed_set_split(index, val_fraction, seed=3)
    assert not set(train) & set(val) and sorted(train + val) == sorted(index.samples)
    n_val = Counter(label for _, label in val)
    for label, n in enumerate(COUNTS):
        assert n_val[label] == min(int(np.floor(n * val_fraction + 0.5)), n - 1)
    assert {lab for _, lab in val} <= {lab for _, lab in train}  # every val identity is trained on


def test_closed_set_split_is_deterministic_and_local_per_identity():
    index = _index(COUNTS)
    a = closed_set_split(index, 0.3, seed=1)
    assert a == closed_set_split(index.samples, 0.3, seed=1)
    assert a != closed_set_split(index, 0.3, seed=2)
    # another identity appearing does not reshuffle the existing ones
    bigger = _index(COUNTS + [7])
    assert [s for s in closed_set_split(bigger, 0.3, seed=1)[1] if s[1] < len(COUNTS)] == a[1]
    with pytest.raises(ValueError):
        closed_set_split(index, 1.0, seed=0)


@pytest.mark.parametrize("eval_fraction,distractor_fraction", [(0.25, 0.5), (0.5, 0.0), (0.4, 1.0), (0.01, 0.5)])
def test_open_set_split_is_identity_disjoint_and_relabelled(eval_fraction, distractor_fraction):
    index = _index(COUNTS)
    sp = open_set_split(index, eval_fraction, distractor_fraction, seed=5)
    c = len(COUNTS)
    n_eval = max(int(round(c * eval_fraction)), 1)
    n_dis = int(round(n_eval * distractor_fraction))
    assert len(sp.query_classes) == n_eval - n_dis and len(sp.distractor_classes) == n_dis
    assert len(sp.train_classes) == c - n_eval
    names = [set(sp.train_classes), set(sp.query_classes), set(sp.distractor_classes)]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert set().union(*names) == set(index.classes)
    # every image lands in exactly one part; train labels are 0..C-1 naming train_classes
    assert sorted(p for p, _ in sp.train + sp.query + sp.distractors) == sorted(p for p, _ in index.samples)
    assert sorted({lab for _, lab in sp.train}) == list(range(len(sp.train_classes)))
    for path, label in sp.train:
        assert path.split("/")[0] == sp.train_classes[label]
    for path, label in sp.query + sp.distractors:  # evaluation sets keep the index's identity labels
        assert path.split("/")[0] == index.classes[label]
    assert {index.classes[lab] for _, lab in sp.query} == set(sp.query_classes)
    # query identities need pairs: the single-image identity is never a query while others are available
    assert "p000" not in sp.query_classes or len(sp.query_classes) + len(sp.distractor_classes) == c


def test_open_set_split_is_deterministic_by_seed():
    index = _index(COUNTS)
    assert open_set_split(index, 0.25, 0.5, seed=0) == open_set_split(index, 0.25, 0.5, seed=0)
    seeds = {tuple(open_set_split(index, 0.25, 0.5, seed=s).train_classes) for s in range(5)}
    assert len(seeds) > 1


def test_open_set_split_errors():
    with pytest.raises(ValueError, match="no training identity"):
        open_set_split(_index([3, 3]), 0.99, 0.5, seed=0)
    with pytest.raises(ValueError):
        open_set_split(_index([3, 3]), 0.5, 1.5, seed=0)


def test_splits_on_a_scanned_synthetic_folder(synth_root):
    from fr_lib.data import scan_folder

    index = scan_folder(synth_root)
    sp = open_set_split(index, 0.25, 0.5, seed=0)
    assert (len(sp.train_classes), len(sp.query_classes), len(sp.distractor_classes)) == (12, 2, 2)
    train, val = closed_set_split(sp.train, 0.1, seed=0)
    assert len(val) == 12 and len(train) == 108
