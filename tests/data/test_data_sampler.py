"""PKSampler / ShuffleBatchSampler: batch composition, coverage, reproducibility from (seed, epoch)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from fr_lib.data import PKSampler, ShuffleBatchSampler, build_batch_sampler

LABELS = np.repeat(np.arange(12), [1, 2, 3, 4, 5, 8, 9, 12, 3, 4, 20, 7]).tolist()


@pytest.mark.parametrize("batch_size,k", [(16, 4), (12, 2), (9, 3)])
def test_every_batch_is_p_identities_times_k_images(batch_size, k):
    s = build_batch_sampler(LABELS, batch_size, k, seed=0)
    assert isinstance(s, PKSampler)
    batches = list(s)
    assert len(batches) == len(s) > 0
    for b in batches:
        assert len(b) == batch_size
        c = Counter(LABELS[i] for i in b)
        assert len(c) == batch_size // k and set(c.values()) == {k}


def test_pk_epoch_covers_every_image_and_is_reproducible():
    s = PKSampler(LABELS, 16, 4, seed=3)
    s.set_epoch(2)
    e2 = list(s)
    seen = {i for b in e2 for i in b}
    # groups are dropped only at the very end when fewer than P identities are left
    assert len(seen) >= len(LABELS) - 4 * 3
    s.set_epoch(5)
    assert list(s) != e2
    again = PKSampler(LABELS, 16, 4, seed=3)
    again.set_epoch(2)
    assert list(again) == e2  # a resumed run rebuilds the same epoch from (seed, epoch)
    other = PKSampler(LABELS, 16, 4, seed=4)
    other.set_epoch(2)
    assert list(other) != e2


def test_identities_with_fewer_than_k_images_are_topped_up_with_repeats():
    labels = [0, 1, 1, 1, 1, 2, 2]
    s = PKSampler(labels, 6, 2, seed=0)
    batches = [b for e in range(4) for b in (s.set_epoch(e) or list(s))]
    for b in batches:
        assert sorted(Counter(labels[i] for i in b).values()) == [2, 2, 2]
    assert any(b.count(0) == 2 for b in batches)  # the single image of identity 0 is repeated


def test_pk_errors():
    with pytest.raises(ValueError, match="multiple"):
        PKSampler(LABELS, 10, 4)
    with pytest.raises(ValueError, match="at least P"):
        PKSampler([0, 0, 1, 1], 12, 2)


def test_plain_shuffling_is_a_reproducible_permutation():
    s = build_batch_sampler(list(range(50)), 8, 0, seed=1)
    assert isinstance(s, ShuffleBatchSampler) and len(s) == 6
    s.set_epoch(0)
    e0 = list(s)
    assert all(len(b) == 8 for b in e0) and len({i for b in e0 for i in b}) == 48
    g = torch.Generator().manual_seed(1 * 1_000_003 + 0)
    assert [i for b in e0 for i in b] == torch.randperm(50, generator=g).tolist()[:48]
    s.set_epoch(1)
    assert list(s) != e0
    s.set_epoch(0)
    assert list(s) == e0
    keep = ShuffleBatchSampler(50, 8, seed=1, drop_last=False)
    assert len(keep) == 7 and sorted(i for b in keep for i in b) == list(range(50))


def test_works_as_a_dataloader_batch_sampler():
    ds = torch.utils.data.TensorDataset(torch.arange(len(LABELS)), torch.tensor(LABELS))
    s = build_batch_sampler(LABELS, 8, 4, seed=0)
    for x, y in torch.utils.data.DataLoader(ds, batch_sampler=s):
        assert x.shape == (8,) and (torch.tensor(LABELS)[x] == y).all()
        assert sorted(Counter(y.tolist()).values()) == [4, 4]
