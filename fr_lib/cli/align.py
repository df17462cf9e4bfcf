"""`fr align SRC DST`: detect, align and write one face crop per photo of an identity/file folder (resumable)."""
from __future__ import annotations

import argparse
import sys

POLICY_CHOICES = ("largest", "most_probable", "central", "skip")  # = fr_lib.align.POLICIES (kept light to import)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "align", help="detect and align faces of SRC/<identity>/<photo> into DST (resumable)",
        description="Detect faces with MTCNN (facenet-pytorch's bundled weights) and write one aligned crop per "
                    "photo to DST in the same identity/file layout. Rerunning resumes where a run stopped. Photos "
                    "that cannot be used are listed in DST/skipped.csv with their reason (unreadable / no face / "
                    "several faces / face too small).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("src", help="folder of photos: SRC/<identity>/<photo>")
    p.add_argument("dst", help="output folder (created); same layout as SRC")
    p.add_argument("--size", type=int, default=112, choices=(112, 160),
                   help="crop side, px: 112 for ArcFace-style backbones, 160 for InceptionResnetV1")
    p.add_argument("--mode", default="similarity", choices=("similarity", "crop"),
                   help="similarity: 5-landmark warp onto the ArcFace template; crop: facenet's box + margin")
    p.add_argument("--device", default="cpu", help="torch device for MTCNN (cpu, cuda, cuda:1)")
    p.add_argument("--batch-size", type=int, default=32, help="photos per MTCNN batch (equal-size photos)")
    p.add_argument("--workers", type=int, default=4, help="threads decoding photos and writing crops")
    p.add_argument("--policy", default="largest", choices=POLICY_CHOICES,
                   help="face kept when a photo has several; 'skip' skips such photos")
    p.add_argument("--min-face-size", type=int, default=32,
                   help="smallest face kept, px (shorter side of the box); smaller -> 'face too small'")
    p.add_argument("--max-side", type=int, default=1024,
                   help="photos larger than this are downscaled for detection only, px")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from fr_lib.align import align_folder
    from fr_lib.device import resolve_device_name

    from fr_lib.cli.fixes import pack_given_for_photos

    for flag, value, least in (("--batch-size", args.batch_size, 1), ("--workers", args.workers, 1),
                               ("--max-side", args.max_side, 1), ("--min-face-size", args.min_face_size, 0)):
        if value < least:
            print(f"error: {flag} must be >= {least}, got {value}", file=sys.stderr)
            return 2
    pack_error = pack_given_for_photos(args.src, "align")
    if pack_error:
        print(f"error: {pack_error}", file=sys.stderr)
        return 2
    try:
        summary = align_folder(args.src, args.dst, size=args.size, mode=args.mode,
                               device=resolve_device_name(args.device),
                               batch_size=args.batch_size, workers=args.workers, policy=args.policy,
                               min_face_size=args.min_face_size, max_side=args.max_side, progress=not args.quiet)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary)
    if summary.aligned == 0:
        print(f"error: no photo under {args.src} gave a usable face (see {summary.skipped_csv})", file=sys.stderr)
        return 1
    return 0
