"""``fr demo`` (``make demo``): the main job end to end, with no download.

1. make the synthetic face dataset (data/synth-demo; reused when complete), unless --data ROOT is given;
2. train the design-card matrix: CE / EfficientNet, CE / InceptionResnetV1, Triplet / EfficientNet,
   ArcFace / EfficientNet (finished runs are reused, interrupted ones resumed; --retrain starts over);
3. evaluate them beside InceptionResnetV1 with random weights (and dlib's pretrained ResNet when installed) on the
   identities no training run saw, by the ID-rate protocol (TPR at FPR 0.5 ... 0.001, ROC-AUC);
4. write id_rate/table.{md,csv,html}, results.json, training.md, roc_curves.png, similarity_distributions.png and
   print our table beside the published CASIA-WebFace one (id_rate/reference_table.md).

Presets: ``demo`` (default on a CPU: sized for ~10-15 minutes on 2 cores), ``full`` (default with CUDA: the
published recipe's image sizes and epochs, on a larger synthetic set unless --data), ``tiny`` (tests).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from fr_lib.evaluation.held_out import CHECKPOINT_FILES, DEFAULT_CHECKPOINT
from fr_lib.io import atomic_write

MATRIX = ("ce-efficientnet", "ce-inceptionresnetv1-1292", "triplet-efficientnet", "arcface-efficientnet")
RANDOM_BASELINE = "random-inception_resnet_v1"
# synthetic dataset per preset: (identities, images per identity); 'demo' is `fr data synth`'s default
SYNTH_SIZES = {"demo": (200, 30), "full": (1000, 40), "tiny": (24, 8)}


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the main job: synthetic data -> train the loss x backbone matrix -> "
                                           "ID-rate table, ROC curves, similarity distributions",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto (default: cuda when available)")
    p.add_argument("--preset", choices=("demo", "full", "tiny"),
                   help="default: demo on a CPU, full with CUDA")
    p.add_argument("--data", metavar="ROOT", help="train and evaluate on ROOT/<identity>/<image> instead of the "
                                                  "synthetic dataset")
    p.add_argument("--raw", metavar="RAW_ROOT", help="with --data: the photos ROOT was aligned from; pretrained "
                                                     "baselines then get their own preprocessing from them")
    p.add_argument("--out", metavar="DIR", help="where tables and figures go (default: id_rate/)")
    p.add_argument("--runs", metavar="DIR", help="run folders DIR/<experiment> (default: runs/<experiment>)")
    p.add_argument("--experiments", metavar="A,B", default=",".join(MATRIX),
                   help=f"experiments to train (default: {','.join(MATRIX)})")
    p.add_argument("--retrain", action="store_true", help="train again even when a finished run exists")
    p.add_argument("--checkpoint", choices=tuple(CHECKPOINT_FILES), default=DEFAULT_CHECKPOINT,
                   help="weights to evaluate: last (end of the cosine schedule, default) or best (min val loss; "
                        "with the demo's small val sets a poor selector for triplet loss, whose val loss is lowest "
                        "in epoch 1)")
    p.add_argument("--no-dlib", action="store_true", help="leave out the dlib-resnet baseline")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override applied to every experiment, e.g. --set train.epochs=2 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=demo_command)


def _configs(args, device: str, preset: str, data_root: str):
    import config

    overrides = config.parse_overrides(args.overrides)
    names = [n.strip() for n in args.experiments.split(",") if n.strip()]
    if not names:
        raise ValueError("--experiments is empty")
    cfgs = []
    for name in names:
        ov = {"data.root": data_root, "train.device": device}
        if not args.data:
            ov["data.min_images_per_identity"] = 1   # the full preset's CASIA filter (>= 75) would drop everything
        if args.runs:
            ov["train.output_dir"] = str(Path(args.runs) / name)
        cfgs.append(config.get_experiment(name, preset, **{**ov, **overrides}))
    return cfgs


def demo_command(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (KeyError, ValueError, FileNotFoundError) as e:
        from fr_lib.cli.fixes import with_fix

        print(f"error: {with_fix(e, 'demo', args.preset or 'demo')}", file=sys.stderr)
        return 2


def _run(args) -> int:
    import config
    from fr_lib.workflows import demo
    from fr_lib.device import resolve_device_name
    from fr_lib.evaluation.held_out import held_out_split, run_checkpoint, split_differences

    t_start = time.perf_counter()
    device = resolve_device_name(args.device)      # DeviceUnavailable is a ValueError: exit code 2
    preset = args.preset or ("full" if device.startswith("cuda") else "demo")
    out = Path(args.out) if args.out else config.ID_RATE_DIR
    progress = not args.no_progress
    include_dlib = not args.no_dlib and _dlib_available()
    n_steps = 2 + len(args.experiments.split(","))

    # 1. data
    if args.data:
        data_root = args.data
    else:
        data_root = str(config.SYNTH_ROOT if preset == "demo" else config.SYNTH_ROOT.with_name(f"synth-{preset}"))
    cfgs = _configs(args, device, preset, data_root)
    if args.data:
        print(f"[1/{n_steps}] data: {data_root}")
    else:
        identities, per_identity = _synth_size(cfgs, preset)
        print(f"[1/{n_steps}] synthetic dataset: {identities} identities x {per_identity} images -> {data_root}")
        info = demo.ensure_synthetic_dataset(data_root, identities, per_identity, progress=progress)
        print("  reused (complete)" if info["reused"] else f"  wrote {info['images']} images in "
                                                         f"{info['seconds']:.0f} s")

    # 2. train (after checking that every run holds out the same identities: one table, one split)
    differ = [f"{c.name}: {', '.join(d)}" for c in cfgs[1:] if (d := split_differences(cfgs[0].data, c.data))]
    if differ:
        raise ValueError(f"the experiments would hold out other identities than {cfgs[0].name} "
                         f"({'; '.join(differ)}); the demo compares models on one shared split")
    rows, training = {}, {}
    for step, cfg in enumerate(cfgs, start=2):
        name = demo.display_name(cfg.loss.name, cfg.model.backbone)
        print(f"[{step}/{n_steps}] {name}: {cfg.name}, preset {preset}, {cfg.train.epochs} epoch(s) at "
              f"{cfg.data.image_size} px on {device} -> {cfg.output_dir}", flush=True)
        run = demo.train_or_reuse(cfg, retrain=args.retrain, progress=progress)
        ckpt = run_checkpoint(cfg.output_dir, args.checkpoint)
        training[name] = {**demo.training_summary(run["history"]), "state": run["state"], "experiment": cfg.name,
                          "checkpoint": str(ckpt)}
        print(f"  {run['state']} ({run['seconds']:.0f} s): best epoch {training[name].get('best_epoch')}, "
              f"val accuracy {training[name].get('val_accuracy', float('nan')):.3f}", flush=True)
        rows[name] = ckpt

    # 3. evaluate on the held-out identities
    print(f"[{n_steps}/{n_steps}] evaluating the {args.checkpoint} checkpoints on the held-out identities",
          flush=True)
    split = held_out_split(cfgs[0].data)
    print(f"  {len(split.query)} query images of {len(split.query_classes)} identities, "
          f"{len(split.distractors)} distractor images of {len(split.distractor_classes)} identities")
    trained_sizes = {c.model.backbone: c.data.image_size for c in cfgs}
    baselines = [RANDOM_BASELINE] + (["dlib-resnet"] if include_dlib else [])
    ev, paths = demo.evaluate_and_report(
        rows, split, baselines, trained_sizes, out, device=device,
        cache_dir=Path(args.runs or config.RUNS_DIR) / ".eval-cache",   # embeddings keyed by weights + data
        training=training, checkpoint=args.checkpoint, progress=progress, log=lambda m: print(f"  {m}"),
        raw_root=args.raw)
    results = ev.results
    atomic_write(out / "training.md", demo.training_table(training))

    # 4. show
    table = (out / "table.md").read_text()
    print(f"\nEvaluated: the {args.checkpoint} checkpoint of each run.")
    print(f"\nID rate on held-out identities ({'synthetic data, preset ' + preset if not args.data else data_root};"
          f" best of each column in bold):\n")
    print(table)
    print("Training:\n")
    print(demo.training_table(training))
    reference = config.ID_RATE_DIR / "reference_table.md"
    if reference.is_file():
        print(f"Published table ({reference}; CASIA-WebFace scale, not comparable number for number with a "
              f"synthetic CPU demo):\n")
        print(_table_only(reference.read_text()))
    checks, base = demo.quality_check(results, list(rows), demo.BASELINE_NAMES[RANDOM_BASELINE])
    print(f"quality check (TPR@FPR=0.01 >= 3 x random weights' {base:.3f}): " +
          ", ".join(f"{n} {t:.3f} {'ok' if ok else 'BELOW'}" for n, t, ok in checks))
    print(f"wrote {', '.join(sorted(p.name for p in paths.values()))}, training.md to {out}")
    print(f"total {time.perf_counter() - t_start:.0f} s")
    return 0


def _synth_size(cfgs, preset: str) -> tuple[int, int]:
    """(identities, images per identity) to generate: what the configs read (their max_identities /
    max_images_per_identity caps) or the preset's default size."""
    identities, per_identity = SYNTH_SIZES[preset]
    caps = [(c.data.max_identities, c.data.max_images_per_identity) for c in cfgs]
    if all(i is not None for i, _ in caps):
        identities = max(i for i, _ in caps)
    if all(n is not None for _, n in caps):
        per_identity = max(n for _, n in caps)
    return identities, per_identity


def _table_only(markdown: str) -> str:
    return "\n".join(line for line in markdown.splitlines() if line.startswith("|")) + "\n"


def _dlib_available() -> bool:
    try:
        from fr_lib.embedders.dlib_resnet import dlib_available
    except ImportError:
        return False
    return dlib_available()
