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

    if getattr(args, "model", None) is not None:
        return _onnx_pipeline(args)
    checkpoint = resolve_checkpoint(args)
    threshold, source = resolve_threshold(args, checkpoint)
    return FacePipeline.from_experiment(checkpoint, device=resolve_device(args.device)), threshold, source


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


def run_cli(handler, args) -> int:
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
                                          "model and print their cosine similarity, the threshold and the verdict. "
                                          "With a folder of one person's photos as IMG2, every photo votes: each "
                                          "one's score is printed, then the aggregate (--aggregation) decides.")
    from fr_lib.recognition.voting import AGGREGATIONS, DEFAULT_AGGREGATION

    p.add_argument("image1", type=Path, metavar="IMG1")
    p.add_argument("image2", type=Path, metavar="IMG2|PERSON_DIR",
                   help="a second photo, or a folder of one person's photos: each photo votes, and the aggregate "
                        "(--aggregation) decides")
    add_model_arguments(p)
    p.add_argument("--largest", action="store_true", help="when a photo holds several faces, use the largest")
    p.add_argument("--aligned", action="store_true",
                   help="the photos are already aligned face crops: no detection")
    p.add_argument("--aggregation", choices=AGGREGATIONS, default=DEFAULT_AGGREGATION,
                   help="PERSON_DIR: mean of the per-photo scores (voters), the max, or the score against the "
                        f"centroid of the embeddings (default: {DEFAULT_AGGREGATION}, best in docs/voters.md)")
    p.add_argument("--score", choices=SCORES, default="cosine",
                   help="cosine similarity of the embeddings, or pair-probability: P(same) from the pair "
                        "classifier head of a run trained with loss 'bce' (threshold 0.5 unless --threshold)")
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


SCORES = ("cosine", "pair-probability")


def pair_scorer(args, checkpoint: Path):
    """--score -> score((Q, D), (M, D)) -> (Q, M) on numpy embeddings: cosine, or the 'bce' run's trained head
    (loaded from the checkpoint's criterion state)."""
    from fr_lib.recognition.voting import cosine

    if args.score == "cosine":
        return cosine
    import torch

    from fr_lib.losses.pair_classifier import load_pair_classifier

    try:
        head = load_pair_classifier(checkpoint)
    except ValueError as e:
        raise CliError(str(e)) from e

    def probability(a, b):
        with torch.no_grad():
            return head.pair_probability(torch.from_numpy(a)[:, None], torch.from_numpy(b)[None]).numpy()

    return probability


def _person_photos(folder: Path) -> list[Path]:
    from fr_lib.data.images import IMAGE_EXTENSIONS

    photos = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")
                    and f.suffix.lower() in IMAGE_EXTENSIONS)
    if not photos:
        raise CliError(f"person folder {folder} holds no photo")
    return photos


def compare_command(args) -> int:
    from fr_lib.recognition.pipeline import FaceCountError, ImageLoadError
    from fr_lib.recognition.voting import vote

    if not args.image1.is_file():
        raise CliError(f"{args.image1} does not exist")
    if not (args.image2.is_file() or args.image2.is_dir()):
        raise CliError(f"{args.image2} does not exist")
    if args.score == "pair-probability":
        if getattr(args, "model", None) is not None:
            raise CliError("--score pair-probability needs the checkpoint of a 'bce' run (--experiment or "
                           "--checkpoint): an exported model holds no pair classifier head")
        score = pair_scorer(args, resolve_checkpoint(args))
        pipeline = load_pipeline(argparse.Namespace(**{**vars(args), "threshold": 0.5}))[0]
        threshold, source = ((args.threshold, "--threshold") if args.threshold is not None
                             else (0.5, "P(same) > 0.5"))
    else:
        score = pair_scorer(args, Path())
        pipeline, threshold, source = load_pipeline(args)
    a = _face(pipeline, args.image1, args)
    if args.image2.is_dir():
        photos, embeddings, skipped = _person_photos(args.image2), [], []
        for photo in photos:
            try:
                embeddings.append((photo, _face(pipeline, photo, args).embedding))
            except (FaceCountError, ImageLoadError) as e:
                skipped.append(f"{photo.name}: {e}")
        if not embeddings:
            raise CliError(f"no usable photo in {args.image2}: " + "; ".join(skipped))
        v = vote(a.embedding, [e for _, e in embeddings], args.aggregation, score)
        print(f"voters: {len(embeddings)} photo(s) of {args.image2} ({args.score})")
        for (photo, _), s in zip(embeddings, v.scores):
            print(f"  {float(s):.4f}  {photo.name}")
        if skipped:
            print(f"skipped {len(skipped)}: " + "; ".join(skipped))
        similarity = v.score
        print(f"similarity: {similarity:.4f} ({args.score}, aggregation {args.aggregation} of {len(embeddings)})")
    else:
        b = _face(pipeline, args.image2, args)
        similarity = float(score(a.embedding[None], b.embedding[None])[0, 0])
        print(f"similarity: {similarity:.4f} ({args.score})")
    print(f"threshold:  {threshold:.4f} ({source})")
    print("SAME" if similarity > threshold else "DIFFERENT")
    return 0
