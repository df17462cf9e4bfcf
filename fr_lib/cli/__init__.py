"""The ``fr`` command. Each sub-command lives in its own module ``fr_lib.cli.<name>`` exposing
``register(subparsers)``; heavy imports happen inside the handlers so ``fr --help`` stays fast.

The CLI is the application layer: unlike the rest of fr_lib it may import ``config``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ("data", "align", "train", "eval", "compare", "recognize", "serve", "export", "demo", "recipe")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fr", description="fr_lib: face-recognition training and evaluation suite")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"fr_lib.cli.{name}")
        except ModuleNotFoundError as e:  # a sub-command not written yet is simply absent
            if e.name == f"fr_lib.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def run_training(fn, *args, error_context: dict | None = None, **kwargs):
    """Call a training entry point (fr_lib.training.loop.train, fr_lib.workflows.recipe.run_recipe) the way the CLIs report it:
    returns (result, None) on success, or (None, exit code) after printing the error: 1 for a diverged run
    (TrainingDiverged: the last good checkpoint is kept), 2 for bad input (ValueError, FileNotFoundError), with
    the command-line fix of a known data/config mismatch (fr_lib.cli.fixes.with_fix(e, **error_context):
    command, preset, cfg)."""
    from fr_lib.cli.fixes import with_fix
    from fr_lib.training.loop import TrainingDiverged

    try:
        return fn(*args, **kwargs), None
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return None, 1
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {with_fix(e, **(error_context or {'command': ''}))}", file=sys.stderr)
        return None, 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
