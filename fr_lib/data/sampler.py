"""Batch samplers whose order is a pure function of (seed, epoch), so a resumed run sees the same batches.

Hand-written rather than pytorch-metric-learning's MPerClassSampler because that one draws from the global numpy
RNG (no per-epoch seed), which breaks exact resume. Both samplers are *batch* samplers:
``DataLoader(dataset, batch_sampler=sampler)``; call ``sampler.set_epoch(epoch)`` before each epoch.
"""
from __future__ import annotations

from collections import defaultdict, deque

import numpy as np
import torch
from torch.utils.data import Sampler


class ShuffleBatchSampler(Sampler[list[int]]):
    """Plain shuffling: a torch.randperm seeded from (seed, epoch), cut into batches of ``batch_size``."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, drop_last: bool = True, shuffle: bool = True):
        if n < 1 or batch_size < 1:
            raise ValueError(f"need n >= 1 and batch_size >= 1, got {n}, {batch_size}")
        self.n, self.batch_size, self.seed, self.drop_last, self.shuffle = n, batch_size, seed, drop_last, shuffle
        if drop_last and n < batch_size:
            self.drop_last = False  # never yield an empty epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        for b in range(len(self)):
            yield order[b * self.batch_size:(b + 1) * self.batch_size]

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)


class PKSampler(Sampler[list[int]]):
    """Identity-balanced P x K batches: P = batch_size // samples_per_class distinct identities, K images each.

    Each epoch every identity's images are shuffled and cut into groups of K (the last group, and identities with
    fewer than K images, are topped up with repeats of that identity); the groups are shuffled and packed greedily
    into batches of P groups of distinct identities. So each epoch visits every image at least once, and every batch
    holds exactly P identities x K images. Needs at least P identities.
    """

    def __init__(self, labels, batch_size: int, samples_per_class: int, seed: int = 0):
        labels = np.asarray(labels)
        if samples_per_class < 1 or batch_size % samples_per_class:
            raise ValueError(f"batch_size ({batch_size}) must be a multiple of samples_per_class ({samples_per_class})")
        self.k = samples_per_class
        self.p = batch_size // samples_per_class
        self.by_label = defaultdict(list)
        for i, label in enumerate(labels.tolist()):
            self.by_label[label].append(i)
        self.label_order = sorted(self.by_label)
        if len(self.label_order) < self.p:
            raise ValueError(f"P x K batches need at least P = {self.p} identities, got {len(self.label_order)}")
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0
        self._plan_epoch, self._plan = None, None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _batches(self) -> list[list[int]]:
        if self._plan_epoch == self.epoch:
            return self._plan
        rng = np.random.default_rng([self.seed, self.epoch])
        groups = []
        for label in self.label_order:
            idx = rng.permutation(self.by_label[label])
            n_groups = -(-len(idx) // self.k)
            need = n_groups * self.k - len(idx)
            if need:
                idx = np.concatenate([idx, rng.choice(idx, need, replace=need > len(idx))])
            groups += [(label, idx[g * self.k:(g + 1) * self.k].tolist()) for g in range(n_groups)]
        pending = deque(groups[i] for i in rng.permutation(len(groups)))
        deferred, batches = [], []   # deferred: groups whose identity was already in the batch being built
        while True:
            used, batch, new_deferred, i = set(), [], [], 0
            while len(used) < self.p and (i < len(deferred) or pending):
                if i < len(deferred):
                    label, members = deferred[i]
                    i += 1
                else:
                    label, members = pending.popleft()
                if label in used:
                    new_deferred.append((label, members))
                else:
                    used.add(label)
                    batch.extend(members)
            deferred = new_deferred + deferred[i:]
            if len(used) < self.p:
                break  # the leftover groups cover fewer than P identities: dropped (drop_last)
            batches.append(batch)
        self._plan_epoch, self._plan = self.epoch, batches
        return batches

    def __iter__(self):
        yield from self._batches()

    def __len__(self) -> int:
        return len(self._batches())


def build_batch_sampler(labels, batch_size: int, samples_per_class: int = 0, seed: int = 0,
                        drop_last: bool = True):
    """P x K identity-balanced batches when samples_per_class > 0, else plain reproducible shuffling.
    Either way a batch sampler with ``set_epoch(epoch)``; the order depends only on (seed, epoch)."""
    if samples_per_class and samples_per_class > 0:
        return PKSampler(labels, batch_size, samples_per_class, seed)
    return ShuffleBatchSampler(len(labels), batch_size, seed, drop_last)
