"""``fr compare IMG1 IMG2 --experiment NAME``: cosine similarity of the faces of two photos, SAME or DIFFERENT.

Also holds what ``fr recognize`` and ``fr serve`` share: the model arguments, and resolving an experiment name to
its checkpoint (``config.get_experiment(name).checkpoint``) and to its stored threshold (``threshold.json`` beside
the checkpoint, written by ``fr eval``: the cosine threshold at FPR = 0.01).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


class CliError(RuntimeError):
    """A problem the user can fix; printed without a traceback."""


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", metavar="NAME", help="a trained experiment (config.EXPERIMENTS, or a run "
                        "folder name under runs/); its best.pt and threshold.json are used")
    parser.add_argument("--checkpoint", type=Path, metavar="PATH",
                        help="a checkpoint file instead of --experiment (threshold.json is looked up beside it)")
    parser.add_argument("--model", type=Path, metavar="MODEL.onnx",
                        help="an exported model (`fr export`) run on onnxruntime instead of --experiment; its "
                             "contract gives the preprocessing and the calibrated threshold")
    parser.add_argument("--threshold", type=float, metavar="T",
                        help="cosine similarity threshold (default: the FPR=0.01 one stored by `fr eval`)")
    parser.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto (default: cuda if available)")


def resolve_checkpoint(args) -> Path:
    """--checkpoint, or the checkpoint of --experiment; CliError naming what is missing."""
    if args.checkpoint is not None:
        if not args.checkpoint.is_file():
            raise CliError(f"checkpoint {args.checkpoint} does not exist")
        return args.checkpoint
    if not args.experiment:
        raise CliError("give --experiment NAME (or --checkpoint PATH)")
    import config

    if args.experiment in config.EXPERIMENTS:
        path = config.get_experiment(args.experiment).checkpoint
    else:  # a run trained under another name (e.g. with overrides) still lives in runs/<name>/
        path = config.RUNS_DIR / args.experiment / "best.pt"
        if not path.parent.is_dir():
            raise CliError(f"unknown experiment {args.experiment!r}: not in config.EXPERIMENTS "
                           f"({', '.join(sorted(config.EXPERIMENTS))}) and no run folder {path.parent}")
    if not path.is_file():
        raise CliError(f"experiment {args.experiment!r} has no checkpoint at {path}: train it first "
                       f"(fr train --experiment {args.experiment})")
    return path


def resolve_threshold(args, checkpoint: Path) -> tuple[float, str]:
    """--threshold, else threshold.json beside the checkpoint -> (threshold, where it came from)."""
    if args.threshold is not None:
        return float(args.threshold), "--threshold"
    from fr_lib.evaluation.thresholds import read_threshold, threshold_path

    try:
        stored = read_threshold(checkpoint)
    except FileNotFoundError as e:
        raise CliError(f"no stored threshold at {threshold_path(checkpoint)}: run `fr eval --experiments "
                       f"{args.experiment or '...'}` first, or pass --threshold T") from e
    except ValueError as e:
        raise CliError(f"{e} (--threshold T)") from e
    fpr = stored["fpr"] if stored["fpr"] is not None else "?"
    return stored["threshold"], f"FPR={fpr}, {threshold_path(checkpoint)}"


def resolve_device(name: str) -> str:
    from fr_lib.device import resolve_device_name

    try:
        return resolve_device_name(name)
    except ValueError as e:
        raise CliError(str(e)) from e


def load_pipeline(args):
    """FacePipeline of --experiment / --checkpoint on --device -> (pipeline, threshold, threshold source)."""
    from fr_lib.recognition.pipeline import FacePipeline

    checkpoint = resolve_checkpoint(args)
    if getattr(args, "model", None) is not None:
        return _onnx_pipeline(args)
    threshold, source = resolve_threshold(args, checkpoint)
    return FacePipeline.from_experiment(checkpoint, device=resolve_device(args.device)), threshold, source


def run_cli(handler, args) -> int:
def _onnx_pipeline(args):
    """--model MODEL.onnx: FacePipeline on onnxruntime; threshold from --threshold, else from the contract."""
    from fr_lib.recognition.pipeline import FacePipeline

    if args.experiment or args.checkpoint:
        raise CliError("give either --model MODEL.onnx or --experiment/--checkpoint, not both")
    if not args.model.is_file():
        raise CliError(f"exported model {args.model} does not exist (make it with `fr export`)")
    try:
        pipeline = FacePipeline.from_onnx(args.model, device=resolve_device(args.device))
    except (ValueError, ImportError, RuntimeError) as e:
        raise CliError(str(e)) from e
    if args.threshold is not None:
        return pipeline, float(args.threshold), "--threshold"
    contract = pipeline.model.contract
    if contract.get("threshold") is None:
        raise CliError(f"{args.model} carries no calibrated threshold (its run had no threshold.json when it was "
                       "exported): pass --threshold T, or run `fr eval` and export again")
    return pipeline, float(contract["threshold"]), f"FPR={contract.get('threshold_fpr', '?')}, {args.model} contract"


    """Call handler(args); user errors (CliError, bad input) -> message on stderr and exit status 2."""
    from fr_lib.recognition.gallery import GalleryError
    from fr_lib.recognition.pipeline import FaceCountError, ImageLoadError
    from fr_lib.recognition.video import SourceError

    try:
        return handler(args)
    except (CliError, GalleryError, ImageLoadError, FaceCountError, SourceError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def register(subparsers) -> None:
    p = subparsers.add_parser("compare", help="compare the faces of two photos (cosine similarity, SAME/DIFFERENT)",
                              description="Detect and align the face in each photo, embed both with a trained "
                                          "model and print their cosine similarity, the threshold and the verdict.")
    p.add_argument("image1", type=Path, metavar="IMG1")
    p.add_argument("image2", type=Path, metavar="IMG2")
    add_model_arguments(p)
    p.add_argument("--largest", action="store_true", help="when a photo holds several faces, use the largest")
    p.add_argument("--aligned", action="store_true",
                   help="the photos are already aligned face crops: no detection")
    p.set_defaults(func=lambda args: run_cli(compare_command, args))


def _face(pipeline, path: Path, args):
    from fr_lib.recognition.pipeline import FaceCountError

    if args.aligned:
        return pipeline.embed_faces(path, policy="aligned")[0]
    faces = pipeline.embed_faces(path, policy="largest" if args.largest else "all")
    if not faces:
        raise FaceCountError(f"no face found in {path}")
    if len(faces) > 1:
        raise FaceCountError(f"{path} holds {len(faces)} faces: pass --largest to use the largest one")
    return faces[0]


def compare_command(args) -> int:
    for path in (args.image1, args.image2):
        if not path.is_file():
            raise CliError(f"{path} does not exist")
    pipeline, threshold, source = load_pipeline(args)
    a, b = _face(pipeline, args.image1, args), _face(pipeline, args.image2, args)
    similarity = float(a.embedding @ b.embedding)
    print(f"similarity: {similarity:.4f} (cosine)")
    print(f"threshold:  {threshold:.4f} ({source})")
    print("SAME" if similarity > threshold else "DIFFERENT")
    return 0
