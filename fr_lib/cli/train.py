"""``fr train``: train one registered experiment (config.EXPERIMENTS) with a preset and overrides.

Two-stage recipe (classification first, then fine-tune only the neck with a metric loss):
    fr train --experiment ce-efficientnet
    fr train --experiment arcface-efficientnet --set train.init_from=runs/ce-efficientnet/best.pt \\
             --set train.freeze_backbone=true
Several GPUs: ``torchrun --nproc_per_node 4 -m fr_lib train --experiment ...`` (data.batch_size is per GPU).
"""
from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    from config import EXPERIMENTS, PRESETS

    p = subparsers.add_parser(
        "train", help="train a registered experiment (backbone x loss)",
        description="Train a registered experiment. Writes runs/<name>/{best.pt,last.pt,metrics.csv,tb/} (or "
                    "train.output_dir). Experiments: " + ", ".join(EXPERIMENTS) + ".",
        epilog="Two-stage recipe: train ce-efficientnet, then e.g. arcface-efficientnet with --set "
               "train.init_from=runs/ce-efficientnet/best.pt --set train.freeze_backbone=true. "
               "Several GPUs: torchrun --nproc_per_node N -m fr_lib train ... (batch size per GPU).")
    p.add_argument("--experiment", required=True, choices=sorted(EXPERIMENTS), metavar="NAME",
                   help="one of: " + ", ".join(sorted(EXPERIMENTS)))
    p.add_argument("--data", help="dataset root (ROOT/<identity>/<image>); default: the experiment's")
    p.add_argument("--epochs", type=int, help="number of epochs")
    p.add_argument("--device", help="cpu | cuda | cuda:N | auto (default: the config's, auto)")
    p.add_argument("--resume", action="store_true", help="continue from <output_dir>/last.pt when it exists")
    p.add_argument("--preset", default="full", choices=list(PRESETS),
                   help="full: the published recipe; demo: CPU-sized run on the synthetic data; tiny: tests")
    p.add_argument("--output-dir", help="where checkpoints and logs go (default: runs/<experiment>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set optim.lr=0.01 --set loss.margin=0.4 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=train_command)


def train_command(args: argparse.Namespace) -> int:
    import config

    try:
        overrides = config.parse_overrides(args.overrides)
        for key, value in (("data.root", args.data), ("train.epochs", args.epochs), ("train.device", args.device),
                           ("train.output_dir", args.output_dir)):
            if value is not None:
                overrides[key] = value
        cfg = config.get_experiment(args.experiment, args.preset, **overrides)
    except (KeyError, ValueError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2

    from fr_lib.cli import run_training
    from fr_lib.training.loop import train

    print(f"training {cfg.name} ({cfg.model.backbone} / {cfg.loss.name}, preset {args.preset}) on {cfg.data.root} "
          f"-> {cfg.output_dir}")
    summary, failed = run_training(train, cfg, resume=args.resume, progress=not args.no_progress,
                                   error_context={"command": "train", "preset": args.preset, "cfg": cfg})
    if failed:
        return failed
    if summary["rank"] == 0:
        print(f"done: {summary['epochs_run']} epoch(s); best epoch {summary['best_epoch']} -> "
              f"{summary['best_checkpoint']}; metrics in {summary['output_dir'] / 'metrics.csv'}")
    return 0
