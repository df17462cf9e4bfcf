"""Throughput of a config's training step and eval forward, measured on the objects train() builds.

The training steps are fr_lib.training.loop.train_step on fr_lib.training.loop.build_run's model, criterion,
optimiser and schedule, so AMP, channels_last, torch.compile, batch augmentation and gradient clipping count
exactly as they do in train(). fr recipe plans its epochs from it; benchmarks/train_step.py prints it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from fr_lib.data import FaceFolder
from fr_lib.training.data import train_transform
from fr_lib.training.loop import Run, _autocast, _to_device, build_run, train_step


@dataclass
class Speed:
    """Measured throughput, images/s: train (forward + backward + optimiser step) and eval (no_grad forward)."""
    train_images_per_s: float
    eval_images_per_s: float


def measure_speed(cfg, num_classes: int, steps: int = 5, device: str = "cpu", warmup: int = 2,
                  index=None, samples=None, apply_on_cpu: bool = False) -> Speed:
    """Time two rounds of ``steps`` training steps (after ``warmup`` untimed steps: the first ones allocate and
    pick kernels, up to 10x slower; the faster round counts) and ``steps`` eval batches of cfg's model and
    criterion at cfg.data.batch_size x 3 x image_size x image_size, with random initial weights (no download,
    no init_from). The caller's RNG streams are left as they were.

    With ``index`` (FolderIndex) and ``samples`` (training [(path, label)]), the training steps load real batches
    through a DataLoader with cfg.data.num_workers and the training transform, so decoding counts as it does in
    training (on 2 busy cores it made an epoch 2.5x slower than the random-tensor estimate); else random images
    (uint8 when cfg.data.batch_augment, as the loader then yields). apply_on_cpu: see build_run."""
    device = torch.device(device)
    forked = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(0)
        run = build_run(cfg, num_classes, device, load_weights=False, apply_on_cpu=apply_on_cpu)
        b, s = cfg.data.batch_size, cfg.data.image_size
        n = warmup + 2 * steps
        batches = _real_batches(cfg, run, index, samples, n) if index is not None and samples else None
        if batches is None:
            k = max(1, cfg.data.samples_per_class)
            labels = (torch.arange(b) // k) % num_classes
            images = (torch.randint(0, 256, (b, 3, s, s), dtype=torch.uint8) if run.batch_augment is not None
                      else torch.randn(b, 3, s, s))
            batches = iter([(images, labels)] * n)
        run.model.train()
        run.criterion.train()
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            images, labels = next(batches)
            train_step(run, images, labels % num_classes)
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        # two rounds, the faster one counts: on a shared machine a burst of other work during one round made a
        # single round read 10x slow (measured here); the budget is about this run's own speed
        train_ips = b / min(float(np.median(times[:steps])), float(np.median(times[steps:])))
        return Speed(train_ips, eval_images_per_s(run, b, s, steps, warmup))


@torch.no_grad()
def eval_images_per_s(run: Run, batch_size: int, image_size: int, steps: int = 5, warmup: int = 2) -> float:
    """Images/s of run.model's eval forward (autocast and channels_last as train()'s evaluation applies them)."""
    x = _to_device(run, torch.randn(batch_size, 3, image_size, image_size))
    run.model.eval()
    times = []
    with _autocast(run.device, run.amp):
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            run.model(x)
            _sync(run.device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return batch_size / float(np.median(times))


def _real_batches(cfg, run: Run, index, samples, n: int):
    """An iterator of n training batches decoded from ``samples``, or None when they do not make n batches."""
    ds = FaceFolder(index, train_transform(cfg.data, run.model.normalization), samples=samples)
    gen = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True,
                                         generator=gen, num_workers=cfg.data.num_workers)
    return iter(loader) if len(loader) >= n else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
