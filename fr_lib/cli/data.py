"""``fr data synth`` (write the synthetic face dataset) and ``fr data stats`` (summarise a dataset root)."""
from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    from config import SYNTH_ROOT

    p = subparsers.add_parser("data", help="synthetic dataset and dataset statistics",
                              description="Create the synthetic face dataset or summarise a dataset folder.")
    sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    s = sub.add_parser("synth", help="write a deterministic synthetic face-identity dataset",
                       description="Write OUT/<identity>/<n>.jpg: identities with stable traits, images with varied "
                                   "pose, lighting, expression, blur, noise, occlusion and background. The same "
                                   "seed gives byte-identical files.")
    s.add_argument("out", nargs="?", default=str(SYNTH_ROOT), help=f"output folder (default: {SYNTH_ROOT})")
    s.add_argument("--identities", type=int, default=200, help="number of identities (default: 200)")
    s.add_argument("--images-per-identity", type=int, default=30,
                   help="images per identity; the mean with --imbalanced (default: 30)")
    s.add_argument("--size", type=int, default=112, help="image side in pixels (default: 112)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    s.add_argument("--imbalanced", action="store_true",
                   help="CASIA-like long-tailed counts per identity (lognormal, with a minimum)")
    s.add_argument("--workers", type=int, default=None, help="worker processes (default: all CPUs)")
    s.set_defaults(func=synth_command)

    t = sub.add_parser("stats", help="identities, images, per-identity histogram and skipped files of a folder",
                       description="Scan ROOT/<identity>/<image> and report identities, images, a text histogram of "
                                   "images per identity, and every skipped file with the reason.")
    t.add_argument("root", nargs="?", default=str(SYNTH_ROOT), help=f"dataset root (default: {SYNTH_ROOT})")
    t.add_argument("--min-images", type=int, default=1, help="identity filter: minimum images per identity")
    t.add_argument("--no-cache", action="store_true", help="rescan instead of using the on-disk index cache")
    t.add_argument("--max-skipped", type=int, default=100, help="list at most this many skipped files (default 100)")
    t.set_defaults(func=stats_command)


def synth_command(args: argparse.Namespace) -> int:
    from fr_lib.data.synth import generate_dataset

    try:
        r = generate_dataset(args.out, args.identities, args.images_per_identity, size=args.size, seed=args.seed,
                             imbalanced=args.imbalanced, workers=args.workers, progress=True)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {r['images']} images of {r['identities']} identities ({r['size']} px, seed {r['seed']}) to "
          f"{r['root']} in {r['seconds']:.1f} s")
    return 0


def text_histogram(counts: list[int], width: int = 40, max_rows: int = 12) -> list[str]:
    """Rows 'lo-hi | ####  n' of a histogram of per-identity image counts."""
    import numpy as np

    counts = np.asarray(counts)
    lo, hi = int(counts.min()), int(counts.max())
    if hi - lo + 1 <= max_rows:
        edges = np.arange(lo, hi + 2)
    else:
        edges = np.unique(np.round(np.geomspace(lo, hi + 1, max_rows + 1)).astype(int))
    hist, _ = np.histogram(counts, bins=edges)
    top = max(int(hist.max()), 1)
    rows = []
    for a, b, n in zip(edges[:-1], edges[1:], hist):
        label = f"{a}" if b - a == 1 else f"{a}-{b - 1}"
        rows.append(f"  {label:>11} | {'#' * int(round(width * n / top)):<{width}} {n}")
    return rows


def stats_command(args: argparse.Namespace) -> int:
    import numpy as np

    from fr_lib.data.scan import scan_folder, scan_identities

    try:
        index = scan_folder(args.root, min_images_per_identity=args.min_images, use_cache=not args.no_cache,
                            progress=True)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        dirs, root_skips = scan_identities(args.root, use_cache=not args.no_cache)
        skipped = root_skips + [(f"{d}/{n}", r) for d, info in dirs.items() for n, r in info["entries"] if r]
        _print_skipped(skipped, args.max_skipped)
        print(f"error: {e}", file=sys.stderr)
        return 1
    counts = np.asarray(index.counts())
    print(f"root: {index.root}")
    print(f"identities: {index.num_classes}")
    print(f"images: {len(index)}")
    print(f"images per identity: min {counts.min()}, median {np.median(counts):g}, mean {counts.mean():.1f}, "
          f"max {counts.max()}")
    print("histogram (images per identity | identities):")
    print("\n".join(text_histogram(counts.tolist())))
    if index.excluded_identities:
        print(f"excluded identities: {len(index.excluded_identities)} (below --min-images {args.min_images})")
    _print_skipped(index.skipped, args.max_skipped)
    return 0


def _print_skipped(skipped, limit: int) -> None:
    print(f"skipped: {len(skipped)}")
    for path, reason in skipped[:limit]:
        print(f"  {path}: {reason}")
    if len(skipped) > limit:
        print(f"  ... and {len(skipped) - limit} more (--max-skipped)")
