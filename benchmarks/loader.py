"""Loader throughput: the packed uint8 memory-map cache vs torchvision ImageFolder + PIL decoding, same files.

Baseline: torchvision.datasets.ImageFolder (PIL decode per image) -> ToTensor -> Normalize, DataLoader(batch).
Packed:  (a) PackedFaces + the same per-item normalisation through a DataLoader;
         (b) PackedFaces.get_batch (one sorted memory-map read per batch) + normalisation on the whole batch.
Prints images/s for each and the ratios to the baseline. Run: python benchmarks/loader.py [--root DIR]
(without --root a synthetic dataset is generated in a temporary folder). Eval-mode transforms (no augmentation)
so the difference is the decoding; both sides run with num_workers=0 in this process.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def _rate(fn, n_images: int, repeats: int) -> float:
    fn()  # warm-up (page cache, allocator)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_images / best


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", help="an ImageFolder-style root (default: a generated synthetic one)")
    p.add_argument("--identities", type=int, default=50)
    p.add_argument("--images-per-identity", type=int, default=30)
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = p.parse_args(argv)

    import torch
    import torchvision
    from torch.utils.data import DataLoader
    from torchvision import transforms as T

    from fr_lib.data import NORMALIZATIONS, PackedFaces, build_transforms, pack_folder, scan_folder
    from fr_lib.data.synth import generate_dataset

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="fr-loader-bench-"))
    root = Path(args.root) if args.root else tmp / "synth"
    if not args.root:
        generate_dataset(root, args.identities, args.images_per_identity, size=args.image_size, seed=0)
    mean, std = NORMALIZATIONS["imagenet"]
    s = args.image_size

    base_ds = torchvision.datasets.ImageFolder(root, transform=T.Compose([T.Resize((s, s)), T.ToTensor(),
                                                                          T.Normalize(mean, std)]))
    n = len(base_ds)

    def baseline():
        for _ in DataLoader(base_ds, batch_size=args.batch_size, num_workers=0):
            pass

    index = scan_folder(root)
    t0 = time.perf_counter()
    pack = pack_folder(index.samples, index.root, tmp / "pack.npy", s, classes=index.classes, progress=False)
    pack_s = time.perf_counter() - t0
    packed_item = PackedFaces(pack, build_transforms("imagenet", s, train=False))
    packed = PackedFaces(pack)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    sd = torch.tensor(std).view(1, 3, 1, 1)

    def per_item():
        for _ in DataLoader(packed_item, batch_size=args.batch_size, num_workers=0):
            pass

    def batched():
        order = torch.randperm(len(packed)).tolist()
        for i in range(0, len(order), args.batch_size):
            x, _ = packed.get_batch(order[i:i + args.batch_size])
            (x.float().div_(255) - m) / sd

    print(f"{n} images, {s} px, batch {args.batch_size}, {args.threads} torch threads, root {root}")
    print(f"pack once (decode + write): {pack_s:.1f} s ({n / pack_s:.0f} images/s)", flush=True)
    r_base = _rate(baseline, n, args.repeats)
    print(f"baseline ImageFolder + PIL        : {r_base:8.0f} images/s", flush=True)
    r_item = _rate(per_item, n, args.repeats)
    print(f"PackedFaces per-item transform    : {r_item:8.0f} images/s   ratio {r_item / r_base:5.1f}x", flush=True)
    r_batch = _rate(batched, n, args.repeats)
    print(f"PackedFaces get_batch + batch norm: {r_batch:8.0f} images/s   ratio {r_batch / r_base:5.1f}x")


if __name__ == "__main__":
    main()
