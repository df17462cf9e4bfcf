"""RecordIO pack loading: decoded images/s from a pack vs torchvision ImageFolder + PIL over the same JPEGs, and the
time and memory to open a CASIA-sized (494,414-image, 10,572-identity) pack index.

Throughput. Baseline: torchvision.datasets.ImageFolder (its PIL loader: open the file, decode, convert to RGB) ->
v2.ToImage (uint8 (3, S, S) tensor), DataLoader(batch 64, N workers). Pack: FaceFolder over the same images packed
with fr_lib.data.write_pack and the same v2.ToImage transform, so FaceFolder decodes JPEG records straight into
tensors (torchvision.io); "pack, PIL decode" forces the PIL path to show where the gain comes from. Workers are
started once (persistent) and warmed up by one epoch before the timed epochs.

Index. fr_lib.data.scan_pack on a synthetic pack with the record count of CASIA-WebFace (tiny image records: the
index, not the images, is measured); baseline: mxnet's MXIndexedRecordIO way of reading train.idx (a Python loop
over lines). Peak memory of the open (tracemalloc, in a second open: Python objects and numpy arrays) is printed
with it.

Run: python benchmarks/pack_loader.py [--workers 0,2] [--identities 40 --images-per-identity 25]
"""
from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path


def _epoch_rate(loader, n: int, repeats: int) -> float:
    for _ in loader:   # warm-up: worker start, page cache
        pass
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in loader:
            pass
        best = min(best, time.perf_counter() - t0)
    return n / best


def throughput(args, tmp: Path) -> None:
    import torch
    import torchvision
    from torch.utils.data import DataLoader
    from torchvision.transforms import v2
    from torchvision.transforms.v2.functional import pil_to_tensor

    from fr_lib.data import FaceFolder, scan_folder, write_pack
    from fr_lib.data.synth import generate_dataset

    torch.set_num_threads(1)
    root = tmp / "folder"
    generate_dataset(root, args.identities, args.images_per_identity, size=args.image_size, seed=0)
    write_pack(scan_folder(root, use_cache=False), tmp / "pack", progress=False)
    to_tensor = v2.Compose([v2.ToImage()])
    datasets = {
        "ImageFolder + PIL (baseline)": torchvision.datasets.ImageFolder(root, transform=to_tensor),
        "pack (fr_lib FaceFolder)": FaceFolder(scan_folder(tmp / "pack"), transform=to_tensor),
        "pack, PIL decode": FaceFolder(scan_folder(tmp / "pack"), transform=pil_to_tensor),
    }
    n = len(datasets["ImageFolder + PIL (baseline)"])
    print(f"throughput: {n} JPEGs of {args.image_size} px, batch {args.batch_size}, best of {args.repeats} epochs")
    for workers in args.workers:
        rates = {}
        for name, ds in datasets.items():
            loader = DataLoader(ds, batch_size=args.batch_size, num_workers=workers,
                                persistent_workers=workers > 0, shuffle=False)
            rates[name] = _epoch_rate(loader, n, args.repeats)
            del loader
        base = rates["ImageFolder + PIL (baseline)"]
        for name, r in rates.items():
            print(f"  workers={workers}  {name:<30} {r:8.0f} img/s  {r / base:5.2f}x")


def _python_idx_loop(path: Path) -> dict:
    """mxnet.recordio.MXIndexedRecordIO.open's index reading, the baseline."""
    idx = {}
    with open(path) as f:
        for line in iter(f.readline, ""):
            line = line.strip().split("\t")
            idx[int(line[0])] = int(line[1])
    return idx


def index_open(args, tmp: Path) -> None:
    import numpy as np

    from fr_lib.data.pack import scan_pack
    from fr_lib.data.recordio import IndexedRecordWriter, IRHeader, pack_payload, read_index

    n, c = args.index_images, args.index_identities
    root = tmp / "big-pack"
    counts = np.full(c, n // c)
    counts[: n - counts.sum()] += 1
    t0 = time.perf_counter()
    with IndexedRecordWriter(root / "train.rec") as w:
        w.write(0, pack_payload(IRHeader(0, [n + 1, n + 1 + c])))
        key = 1
        tiny = b"\xff\xd8\xff"
        for label, k in enumerate(counts.tolist()):
            for _ in range(k):
                w.write(key, pack_payload(IRHeader(0, float(label), key, 0), tiny))
                key += 1
        start = 1
        for label, k in enumerate(counts.tolist()):
            w.write(n + 1 + label, pack_payload(IRHeader(0, [start, start + k])))
            start += k
    print(f"index: synthetic pack of {n} image + {c} identity records written in {time.perf_counter() - t0:.1f} s "
          f"({(root / 'train.rec').stat().st_size / 2**20:.0f} MiB .rec)")
    t0 = time.perf_counter()
    _python_idx_loop(root / "train.idx")
    loop_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    read_index(root / "train.idx")
    parse_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = scan_pack(root)
    open_s = time.perf_counter() - t0
    del index
    tracemalloc.start()   # a second open for the memory: tracemalloc slows allocation-heavy code several times
    index = scan_pack(root)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(index) == n and index.num_classes == c
    print(f"  train.idx, mxnet's Python line loop (baseline): {loop_s:6.2f} s")
    print(f"  train.idx, fr_lib read_index (numpy parser):    {parse_s:6.2f} s  {loop_s / parse_s:5.1f}x faster")
    print(f"  scan_pack (idx + {c} identity records + the {n}-sample index): {open_s:.2f} s, "
          f"peak {peak / 2**20:.0f} MiB traced")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", default="0,2", help="comma-separated DataLoader worker counts (default 0,2)")
    p.add_argument("--identities", type=int, default=40)
    p.add_argument("--images-per-identity", type=int, default=25)
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--index-images", type=int, default=494_414, help="CASIA-WebFace: 494,414 images")
    p.add_argument("--index-identities", type=int, default=10_572)
    p.add_argument("--skip-index", action="store_true", help="only the throughput part")
    p.add_argument("--skip-throughput", action="store_true", help="only the index part")
    args = p.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="fr-pack-bench-") as tmp:
        if not args.skip_throughput:
            throughput(args, Path(tmp))
        if not args.skip_index:
            index_open(args, Path(tmp))


if __name__ == "__main__":
    main()
