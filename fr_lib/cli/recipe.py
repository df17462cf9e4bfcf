"""``fr recipe``: the small-scale real-photo recipe on any identity-folder photo collection.

    fr recipe PHOTO_ROOT --experiments ce-efficientnet,arcface-efficientnet --minutes 10 --device cpu --out DIR

align -> identity-disjoint split -> train each experiment for the stated minutes -> evaluate beside random weights
and dlib-resnet (when installed) -> table, ROC curves, similarity distributions, pairs.txt + verification table
(fr_lib.workflows.recipe). The experiments start from config.EXPERIMENTS with the 'small' preset (config.PRESETS['small'] and
config.SMALL_OVERRIDES: sized for a few thousand photos of ~100 identities on a CPU); --set changes any config field
for every experiment.
"""
from __future__ import annotations

import argparse
import sys

from fr_lib.evaluation.held_out import CHECKPOINT_FILES, DEFAULT_CHECKPOINT


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "recipe", help="align -> train within a time budget -> evaluate beside baselines, on any photo folder",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photo_root", help="photos in PHOTO_ROOT/<identity>/<photo> (raw photos: they are aligned first)")
    p.add_argument("--experiments", default="ce-efficientnet,arcface-efficientnet", metavar="A,B",
                   help="comma-separated config.EXPERIMENTS names (default: %(default)s)")
    p.add_argument("--minutes", type=float, help="training budget per experiment, minutes (the epoch count that fits "
                                                  "is planned from a measured speed)")
    p.add_argument("--epochs", type=int, help="instead of --minutes: exactly this many epochs per experiment, "
                                              "whatever the machine's speed (reproducible tables)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (training, alignment and evaluation)")
    p.add_argument("--out", required=True, metavar="DIR", help="tables, figures, pairs.txt, summary.json")
    p.add_argument("--work", metavar="DIR", help="aligned crops and training runs (default: OUT/work)")
    p.add_argument("--aligned", metavar="DIR", help="folder for the aligned crops (default: WORK/aligned-112); "
                                                    "an existing one is resumed, not redone")
    p.add_argument("--align-max-side", type=int, default=1024,
                   help="photos larger than this are downscaled for face detection only, px (default %(default)s)")
    p.add_argument("--already-aligned", action="store_true", help="PHOTO_ROOT holds aligned crops: skip alignment")
    p.add_argument("--baselines", default=None, metavar="A,B",
                   help="untrained/pretrained rows (fr_lib.embedders.resolve names; '' for none; default: random weights of "
                        "each trained backbone at its training size, e.g. random-efficientnet_b0@64, plus "
                        "random-efficientnet_b0 at 112 px and dlib-resnet)")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, choices=tuple(CHECKPOINT_FILES),
                   help="evaluate the last epoch (default, as fr demo) or the epoch with the lowest closed-set val "
                        "loss")
    p.add_argument("--max-epochs", type=int, help="upper bound on the planned epochs")
    p.add_argument("--pairs-per-fold", type=int, default=300, help="matched (and mismatched) pairs per fold of "
                                                                    "pairs.txt (10 folds; lowered if too few)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field of every experiment, e.g. --set optim.lr=0.001, or of one: "
                        "--set arcface-efficientnet:loss.margin=0.3 (repeatable)")
    p.add_argument("--no-flip", dest="flip", action="store_false",
                   help="no flip test at evaluation (by default each embedding is the mean of the crop's and its "
                        "mirror's, insightface's protocol; pretrained baselines with their own preprocessing keep "
                        "theirs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=recipe_command)


def experiment_configs(names: list[str], overrides: list[str]) -> dict:
    """{name: config.get_experiment(name, "small") with the --set overrides};
    an override 'NAME:key=value' applies to experiment NAME only (e.g. the two-stage recipe: ArcFace starting
    from the CE run's weights)."""
    import config

    shared, per = [], {}
    for item in overrides:
        head, sep, _ = item.partition("=")
        if ":" in head:
            target, _, rest = item.partition(":")
            if target not in names:
                raise KeyError(f"--set {item!r}: {target!r} is not one of the experiments {names}")
            per.setdefault(target, []).append(rest)
        else:
            shared.append(item)
    user = config.parse_overrides(shared)
    out = {}
    for name in names:
        out[name] = config.get_experiment(name, "small", **{**user, **config.parse_overrides(per.get(name, []))})
    return out


def default_baselines(cfgs) -> list[str]:
    """Random weights of each trained backbone at the input size it was trained at (the like-for-like chance row),
    random EfficientNet-B0 at its default 112 px, and dlib's pretrained ResNet."""
    rows = [f"random-{c.model.backbone}@{c.data.image_size}" for c in cfgs]
    return list(dict.fromkeys(rows + ["random-efficientnet_b0", "dlib-resnet"]))


def recipe_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    names = [n.strip() for n in args.experiments.split(",") if n.strip()]
    if (args.minutes is None) == (args.epochs is None):
        print("error: give one of --minutes (a time budget) or --epochs (a fixed epoch count)", file=sys.stderr)
        return 2
    if (args.minutes is not None and args.minutes <= 0) or (args.epochs is not None and args.epochs < 1):
        print(f"error: --minutes / --epochs must be > 0, got {args.minutes or args.epochs}", file=sys.stderr)
        return 2
    from fr_lib.device import resolve_device_name

    try:
        args.device = resolve_device_name(args.device)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not Path(args.photo_root).is_dir():
        print(f"error: photo folder {args.photo_root} does not exist", file=sys.stderr)
        return 2
    from fr_lib.cli.fixes import pack_given_for_photos

    pack_error = pack_given_for_photos(args.photo_root, "recipe")
    if pack_error:
        print(f"error: {pack_error}", file=sys.stderr)
        return 2
    try:
        cfgs = experiment_configs(names, args.overrides)
    except (KeyError, ValueError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    baselines = (default_baselines(cfgs.values()) if args.baselines is None
                 else [n.strip() for n in args.baselines.split(",") if n.strip()])

    from fr_lib.cli import run_training
    from fr_lib.workflows.recipe import run_recipe

    work = Path(args.work) if args.work else Path(args.out) / "work"
    _, failed = run_training(
        run_recipe, args.photo_root, cfgs, args.minutes, args.out, work, device=args.device, baselines=baselines,
        aligned_root=args.aligned, align_max_side=args.align_max_side, skip_align=args.already_aligned,
        checkpoint=args.checkpoint, pairs_per_fold=args.pairs_per_fold, max_epochs=args.max_epochs,
        progress=not args.no_progress, epochs=args.epochs, flip=args.flip, error_context={"command": "recipe"})
    return failed or 0
