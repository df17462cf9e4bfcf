"""Does the training input pipeline keep the accelerator busy? Images/s delivered by fr_lib.training.loop's own loader
(packed uint8 cache or JPEG decoding, training augmentation, N DataLoader workers, pinned memory) beside the
images/s of one bf16 training step on the same device (the baseline, from benchmarks/train_step.py).

    python benchmarks/input_pipeline.py --device cuda --workers 4,8,14 --batch-size 256
    python benchmarks/input_pipeline.py                       # CPU: 2 workers, small batch

Prints one line per worker count with the ratio loader / step: >= 1 means the loader does not starve the step.
A synthetic dataset (fr data synth) is generated in a temporary folder unless --root is given.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def loader_rate(data_cfg, workers: int, device: str, max_batches: int) -> float:
    """Images/s of fr_lib.training.loop's input side: loader batches moved to ``device`` (+ BatchAugment there when
    data_cfg.batch_augment), as the training loop does before the forward pass."""
    import torch

    from fr_lib.data import build_batch_sampler
    from fr_lib.data.batch_augment import BatchAugment
    from fr_lib.training.data import build_training_data, make_loader

    data = build_training_data(data_cfg, "imagenet")
    sampler = build_batch_sampler(data.train.targets, data_cfg.batch_size, 0, 0)
    pin = device.startswith("cuda")
    loader = make_loader(data.train, sampler, workers, pin)
    aug = BatchAugment("imagenet", data_cfg.image_size).to(device) if data_cfg.batch_augment else None
    n, t0 = 0, None
    for i, (images, labels) in enumerate(loader):
        images = images.to(device, non_blocking=pin)
        if aug is not None:
            images = aug(images)
        if i == 1:               # first batch pays the worker start-up; time the steady state after it
            if pin:
                torch.cuda.synchronize()
            t0, n = time.perf_counter(), 0
        elif i > 1:
            n += len(labels)
        if i >= max_batches:
            break
    if pin:
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main(argv=None) -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--root", help="identity-folder dataset (default: a generated synthetic one)")
    p.add_argument("--identities", type=int, default=300)
    p.add_argument("--images-per-identity", type=int, default=20)
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--batch-size", type=int, default=None, help="default 256 on CUDA, 16 on CPU")
    p.add_argument("--workers", default=None, help="comma-separated DataLoader worker counts (default 8 / 2)")
    p.add_argument("--batches", type=int, default=40, help="timed batches per worker count")
    p.add_argument("--jpeg", action="store_true", help="decode JPEGs every epoch instead of the packed cache")
    p.add_argument("--augment-on", default="loader,device",
                   help="where training augmentation runs: loader (per image, in the workers), device (BatchAugment "
                        "on whole batches), or both to compare (default)")
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    batch = args.batch_size or (256 if cuda else 16)
    workers = [int(w) for w in (args.workers or ("8" if cuda else "2")).split(",")]

    import config
    from train_step import images_per_second

    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            from fr_lib.data.synth import generate_dataset

            root = str(Path(tmp) / "synth")
            generate_dataset(root, identities=args.identities, images_per_identity=args.images_per_identity,
                             size=args.image_size, seed=0, workers=max(workers))
        base = config.DataConfig(root=root, image_size=args.image_size, batch_size=batch,
                                 packed_cache=not args.jpeg, cache_dir=str(Path(tmp) / "packed"),
                                 eval_identity_fraction=0.1)
        step = images_per_second("efficientnet_b0", args.image_size, "bf16" if cuda else "fp32",
                                 torch.device(args.device), batch, steps=10 if cuda else 2, warmup=3 if cuda else 1)
        print(f"baseline: efficientnet_b0 {args.image_size} px training step ({'bf16' if cuda else 'fp32'}, batch "
              f"{batch}) on {args.device}: {step:.0f} images/s")
        print(f"{'input':<8}{'augment on':<12}{'workers':>8}{'images/s':>11}{'loader / step':>15}")
        for where in args.augment_on.split(","):
            data_cfg = dataclasses.replace(base, batch_augment=where == "device")
            for w in workers:
                rate = loader_rate(data_cfg, w, args.device, max_batches=args.batches)
                print(f"{'jpeg' if args.jpeg else 'packed':<8}{where:<12}{w:>8}{rate:>11.0f}{rate / step:>14.2f}x",
                      flush=True)


if __name__ == "__main__":
    main()
