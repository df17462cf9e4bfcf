"""``fr data synth`` (write the synthetic face dataset), ``fr data stats`` (summarise a dataset folder or pack),
``fr data pack`` / ``fr data unpack`` (identity folder <-> insightface RecordIO pack)."""
from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    from config import SYNTH_ROOT

    p = subparsers.add_parser("data", help="synthetic dataset, dataset statistics, RecordIO packs",
                              description="Create the synthetic face dataset, summarise a dataset folder or pack, "
                                          "convert between identity folders and insightface RecordIO packs.")
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
    s.add_argument("--format", choices=("folder", "pack"), default="folder",
                   help="folder: OUT/<identity>/<n>.jpg; pack: OUT/train.rec, train.idx, property (insightface "
                        "layout, like CASIA-WebFace) plus OUT/synth.bin, a verification set of held-out identities")
    s.add_argument("--bin-identities", type=int, default=None,
                   help="--format pack: held-out identities in synth.bin (default: max(2, identities / 10))")
    s.add_argument("--bin-pairs", type=int, default=600,
                   help="--format pack: pairs in synth.bin, a multiple of 20 (default: 600, like LFW's folds)")
    s.set_defaults(func=synth_command)

    t = sub.add_parser("stats", help="identities, images, per-identity histogram and skipped files of a folder",
                       description="Scan ROOT/<identity>/<image> (or a RecordIO pack: ROOT/train.rec + train.idx) "
                                   "and report identities, images, a text histogram of images per identity, and "
                                   "every skipped file with the reason.")
    t.add_argument("root", nargs="?", default=str(SYNTH_ROOT),
                   help=f"dataset folder or pack (default: {SYNTH_ROOT})")
    t.add_argument("--min-images", type=int, default=1, help="identity filter: minimum images per identity")
    t.add_argument("--no-cache", action="store_true", help="rescan instead of using the on-disk index cache")
    t.add_argument("--max-skipped", type=int, default=100, help="list at most this many skipped files (default 100)")
    t.add_argument("--verify", action="store_true",
                   help="for a pack: decode every image record once and list those that do not decode (a folder "
                        "scan always does this)")
    t.set_defaults(func=stats_command)

    k = sub.add_parser("pack", help="write an identity folder as an insightface RecordIO pack",
                       description="Write SRC/<identity>/<image> as DST/train.rec, DST/train.idx and DST/property in "
                                   "the insightface layout (what CASIA-WebFace ships as; readable by mxnet and "
                                   "arcface_torch). Image files are stored as they are (no re-encoding); identities "
                                   "get labels 0..C-1 in name order.")
    k.add_argument("src", help="aligned identity folder SRC/<identity>/<image> (or another pack)")
    k.add_argument("dst", help="output folder for train.rec / train.idx / property")
    k.add_argument("--min-images", type=int, default=1, help="identity filter: minimum images per identity")
    k.set_defaults(func=pack_command)

    u = sub.add_parser("unpack", help="write the images of a RecordIO pack as identity folders",
                       description="Write every image record of PACK (train.rec + train.idx) as "
                                   "DST/<identity>/<key>.jpg (the stored bytes). Existing files are kept, so an "
                                   "interrupted run resumes.")
    u.add_argument("pack", help="folder holding train.rec and train.idx")
    u.add_argument("dst", help="output folder")
    u.set_defaults(func=unpack_command)


def synth_command(args: argparse.Namespace) -> int:
    from fr_lib.data.synth import generate_dataset, generate_pack

    try:
        if args.format == "pack":
            r = generate_pack(args.out, args.identities, args.images_per_identity, size=args.size, seed=args.seed,
                              imbalanced=args.imbalanced, workers=args.workers, bin_identities=args.bin_identities,
                              bin_pairs=args.bin_pairs, progress=True)
        else:
            r = generate_dataset(args.out, args.identities, args.images_per_identity, size=args.size,
                                 seed=args.seed, imbalanced=args.imbalanced, workers=args.workers, progress=True)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    where = "as a pack (train.rec/train.idx/property) " if args.format == "pack" else ""
    print(f"wrote {r['images']} images of {r['identities']} identities ({r['size']} px, seed {r['seed']}) {where}to "
          f"{r['root']} in {r['seconds']:.1f} s")
    if args.format == "pack":
        print(f"wrote {r['bin']}: {args.bin_pairs} verification pairs of {r['bin_identities']} held-out identities")
    return 0


def pack_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fr_lib.data.pack import write_pack
    from fr_lib.data.scan import scan_folder

    try:
        if Path(args.dst).resolve() == Path(args.src).resolve():
            raise ValueError(f"DST {args.dst} is SRC: write the pack to another folder")
        index = scan_folder(args.src, min_images_per_identity=args.min_images, progress=True)
        if index.skipped:
            print(f"skipped {len(index.skipped)} unusable file(s) of {args.src} (see `fr data stats {args.src}`)")
        r = write_pack(index, args.dst, progress=True)
    except (ValueError, OSError) as e:
        from fr_lib.cli.fixes import with_fix

        print(f"error: {with_fix(e, 'data pack')}", file=sys.stderr)
        return 2
    h, w = r["size"]
    print(f"wrote {r['images']} images of {r['identities']} identities ({w}x{h} px"
          f"{', sizes differ' if r['sizes_differ'] else ''}) to {r['root']}/train.rec, train.idx, property")
    return 0


def unpack_command(args: argparse.Namespace) -> int:
    from fr_lib.data.pack import PackIndex, unpack_pack
    from fr_lib.data.scan import scan_folder

    try:
        index = scan_folder(args.pack, progress=True)
        if not isinstance(index, PackIndex):
            raise ValueError(f"{args.pack} is not a pack (no train.rec / train.idx): it is an identity folder "
                             f"already, usable as it is (fr train --data {args.pack}); fr data pack {args.pack} DST "
                             "writes it as a pack")
        r = unpack_pack(index, args.dst, progress=True)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    kept = f" ({r['kept']} already there)" if r["kept"] else ""
    print(f"wrote {r['written']} images of {index.num_classes} identities to {r['root']}{kept}")
    _print_skipped(r["failed"], 20, "unreadable records")
    return 1 if r["failed"] else 0


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

    from fr_lib.cli.fixes import with_fix
    from fr_lib.data.pack import PackIndex, is_pack
    from fr_lib.data.recordio import RecordIOError
    from fr_lib.data.scan import scan_folder, scan_identities

    try:
        index = scan_folder(args.root, min_images_per_identity=args.min_images, use_cache=not args.no_cache,
                            progress=True)
    except (FileNotFoundError, RecordIOError) as e:
        print(f"error: {with_fix(e, 'data stats')}", file=sys.stderr)
        return 2
    except ValueError as e:  # nothing usable: bad input, like every fr command's (exit 2)
        if not is_pack(args.root):
            dirs, root_skips = scan_identities(args.root, use_cache=not args.no_cache)
            skipped = root_skips + [(f"{d}/{n}", r) for d, info in dirs.items() for n, r in info["entries"] if r]
            _print_skipped(skipped, args.max_skipped)
        print(f"error: {with_fix(e, 'data stats')}", file=sys.stderr)
        return 2
    counts = np.asarray(index.counts())
    print(f"root: {index.root}")
    if isinstance(index, PackIndex):
        prop = (f"; property: {index.property[0]} classes, {index.property[2]}x{index.property[1]} px"
                if index.property else "; no property file")
        print(f"format: RecordIO pack ({index.layout} layout{prop})")
    print(f"identities: {index.num_classes}")
    print(f"images: {len(index)}")
    print(f"images per identity: min {counts.min()}, median {np.median(counts):g}, mean {counts.mean():.1f}, "
          f"max {counts.max()}")
    print("histogram (images per identity | identities):")
    print("\n".join(text_histogram(counts.tolist())))
    if index.excluded_identities:
        print(f"excluded identities: {len(index.excluded_identities)} (below --min-images {args.min_images})")
    skipped = list(index.skipped)
    if isinstance(index, PackIndex):
        if args.verify:
            from fr_lib.data.pack import verify_pack

            skipped += verify_pack(index, progress=True)
        else:
            print("image records not decoded (--verify decodes each once; training skips bad ones and reports them)")
    _print_skipped(skipped, args.max_skipped)
    return 0


def _print_skipped(skipped, limit: int, what: str = "skipped") -> None:
    print(f"{what}: {len(skipped)}")
    for path, reason in skipped[:limit]:
        print(f"  {path}: {reason}")
    if len(skipped) > limit:
        print(f"  ... and {len(skipped) - limit} more (--max-skipped)")
