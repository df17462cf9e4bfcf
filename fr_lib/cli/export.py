"""``fr export --experiment NAME|CHECKPOINT --format onnx [--opset N] OUT.onnx``: the embedding model of a trained
run as ONNX (or TorchScript) with its preprocessing contract, checked against PyTorch on real and synthetic faces
(fr_lib.embedders.export). The exported file works wherever a model is taken: ``--model OUT.onnx``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fr_lib.cli.compare import CliError, resolve_checkpoint, run_cli


def register(subparsers) -> None:
    from fr_lib.embedders.export import DEFAULT_OPSET, FORMATS

    p = subparsers.add_parser(
        "export", help="export a trained embedding model to ONNX / TorchScript with its preprocessing contract",
        description="Write the embedding model only (no classifier or loss weights), batch axis dynamic, with the "
                    "preprocessing contract (input size, normalisation mean/std, RGB order, L2-normalised output, "
                    "the run's calibrated threshold) in the model's metadata and in OUT.json beside it; then embed "
                    "aligned faces (skimage's astronaut + synthetic faces) with both runtimes and print the max abs "
                    "difference and cosine. Exit 1 if they disagree by more than 1e-4.")
    p.add_argument("output", type=Path, metavar="OUT.onnx")
    p.add_argument("--experiment", required=True, metavar="NAME|CHECKPOINT",
                   help="a trained experiment (config.EXPERIMENTS or a run folder under runs/) or a checkpoint file")
    p.add_argument("--format", dest="fmt", choices=FORMATS, default="onnx", help="default onnx")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-PyTorch check")
    p.set_defaults(func=lambda args: run_cli(export_command, args))


def _checkpoint(experiment: str) -> Path:
    path = Path(experiment)
    if path.suffix in (".pt", ".pth") or path.is_file():
        return resolve_checkpoint(argparse.Namespace(checkpoint=path, experiment=None))
    return resolve_checkpoint(argparse.Namespace(checkpoint=None, experiment=experiment))


def export_command(args) -> int:
    from fr_lib.embedders.export import ExportError, export_checkpoint

    if args.fmt == "onnx" and args.output.suffix != ".onnx":
        raise CliError(f"{args.output}: an ONNX export is written to a .onnx file")
    checkpoint = _checkpoint(args.experiment)
    try:
        report = export_checkpoint(checkpoint, args.output, fmt=args.fmt, opset=args.opset, check=not args.no_check)
    except ExportError as e:  # an operator the exporter lacks, or the runtimes disagree
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ImportError, ValueError) as e:  # the onnx extra missing; a bad checkpoint or threshold.json
        raise CliError(str(e)) from e
    print(report.summary() if not args.no_check else f"wrote {report.path} ({report.format}), not checked")
    c = report.contract
    print(f"contract: {c['input_size'][0]} px {c['color_order']} {c['input_layout']}, normalization "
          f"{c['normalization']} mean {c['mean']} std {c['std']}, L2-normalised {c['embedding_size']}-d output, "
          f"threshold {c['threshold'] if c['threshold'] is not None else 'none (run fr eval first)'}; "
          f"also in {report.contract_path}")
    return 0
