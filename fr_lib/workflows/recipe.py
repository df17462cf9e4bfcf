"""The small-scale real-photo recipe on any identity-folder photo collection (``fr recipe``):

    align (fr_lib.align.align_folder, resumable) -> identity-disjoint split (training identities vs held-out
    query / distractor identities) -> train each experiment within a time budget -> evaluate the trained models
    beside baselines (random weights, dlib-resnet when installed) on the held-out identities -> comparison table,
    ROC curves, similarity distributions, training curves, and LFW-style verification on a pairs file of the
    held-out identities.

    >>> summary = run_recipe("photos/", {"ce-efficientnet": cfg_ce, "arcface-efficientnet": cfg_arc},
    ...                      minutes=10, out_dir="recipe-out", work_dir="recipe-work")

fr_lib does not import config: the caller passes experiment configs (config.ExperimentConfig or anything with the
same fields and a ``replace(**dotted_overrides)`` method); the recipe points them at the aligned photos, its run
folders and the epoch count that fits the time budget.

Time budget: the epoch count is chosen before training from a measured speed (a few timed optimiser steps and
forward passes of the real model at the real batch size, see measure_speed / plan_epochs) because the learning-rate
schedule (warmup + cosine) needs the total length up front: stopping a cosine schedule after M minutes would leave
the model at a high learning rate. The achieved training time is measured and reported beside the budget; on a
shared machine it can differ from the plan by the change in load.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from fr_lib.evaluation.held_out import (DEFAULT_CHECKPOINT, FPRS, HeldOutSplit, evaluate_models, held_out_split,
                                        run_checkpoint, split_differences, write_report)
from fr_lib.io import atomic_write, safe_filename, save_figure
from fr_lib.training.speed import Speed, measure_speed   # the budget is measured on train()'s own step

DEFAULT_BASELINES = ("random-efficientnet_b0", "dlib-resnet")


# ------------------------------------------------------------------------------------------------ budget
def plan_epochs(minutes: float, n_train: int, n_eval_per_epoch: int, speed: Speed, max_epochs: int | None = None,
                min_epochs: int = 1) -> int:
    """Epochs that fit ``minutes``: floor(60 * minutes / seconds_per_epoch), with seconds_per_epoch =
    n_train / train_images_per_s + n_eval_per_epoch / eval_images_per_s (train() evaluates the closed-set val
    images and the open-set images after every epoch); clipped to [min_epochs, max_epochs]."""
    if minutes <= 0:
        raise ValueError(f"minutes must be > 0, got {minutes}")
    per_epoch = n_train / speed.train_images_per_s + n_eval_per_epoch / speed.eval_images_per_s
    epochs = max(min_epochs, int(math.floor(60.0 * minutes / per_epoch)))
    return min(epochs, max_epochs) if max_epochs else epochs


# ------------------------------------------------------------------------------------------------ split
def split_for(data_cfg) -> HeldOutSplit:
    """The split train() uses for data_cfg (fr_lib.evaluation.held_out.held_out_split); ValueError without a
    held-out query identity (checked before hours of training)."""
    split = held_out_split(data_cfg)
    if not split.query:
        raise ValueError(f"{data_cfg.root}: no held-out query identity (eval_identity_fraction "
                         f"{data_cfg.eval_identity_fraction}); the recipe needs query identities with 2+ images")
    return split


# ------------------------------------------------------------------------------------------------ steps
def align_photos(photo_root, aligned_root, size: int = 112, device: str = "cpu", max_side: int | None = 1024,
                 progress: bool = True):
    """fr_lib.align.align_folder with the recipe's settings (similarity warp, largest face); resumable: photos
    already aligned or skipped by an earlier run are not redone. Returns its AlignSummary."""
    from fr_lib.align import align_folder

    summary = align_folder(photo_root, aligned_root, size=size, mode="similarity", device=device,
                           workers=2, max_side=max_side, progress=progress)
    if summary.aligned == 0:
        raise ValueError(f"no photo under {photo_root} gave a usable face (see {summary.skipped_csv})")
    return summary


# where and how a run executes, not what it trains: may change between a run and its resumption
_RUN_PLACE_KEYS = frozenset({"train.device", "train.output_dir", "data.num_workers", "data.cache_dir",
                             "train.val_targets"})   # none of them changes the trained weights


def train_within_budget(cfg, minutes: float | None, split: HeldOutSplit, resume: bool = True, progress: bool = True,
                        max_epochs: int | None = None, epochs: int | None = None) -> dict:
    """Measure speed, set train.epochs to what fits ``minutes`` (or to ``epochs`` exactly, which makes the run
    independent of the machine's speed), train (fr_lib.training.loop.train). A finished run (its
    last.pt already at the planned epoch count) is not retrained. Returns a record: name, planned epochs, measured
    speed, budget and achieved training seconds, checkpoint paths, last history row."""
    from fr_lib.training.checkpoint import config_differences, load_checkpoint
    from fr_lib.training.loop import resolve_device, train

    device = str(resolve_device(cfg.train.device))
    plan_file = Path(cfg.output_dir) / "recipe_plan.json"
    if resume and plan_file.is_file():   # keep the first plan: re-measuring would change the schedule length
        plan = json.loads(plan_file.read_text())
    else:
        speed = measure_speed(cfg, len(split.train_classes), device=device, index=split.index,
                              samples=split.train)
        if epochs is None:
            epochs = plan_epochs(minutes, split.n_train, split.n_val + len(split.query) + len(split.distractors),
                                 speed, max_epochs=max_epochs)
        plan = {"epochs": epochs, "minutes": minutes, "train_images_per_s": speed.train_images_per_s,
                "eval_images_per_s": speed.eval_images_per_s, "device": device}
        plan_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(plan_file, json.dumps(plan, indent=2) + "\n")
    cfg = cfg.replace(**{"train.epochs": int(plan["epochs"])})
    last = Path(cfg.output_dir) / "last.pt"
    if last.is_file():   # reuse or resume only the very same run: a changed --set must not be silently ignored
        changed = config_differences(load_checkpoint(last)["config"], cfg.to_dict(), ignore=_RUN_PLACE_KEYS)
        if changed:
            raise ValueError(f"{cfg.output_dir} holds a run of {cfg.name} with another config ({'; '.join(changed)}"
                             f"); use another --work folder, or delete that run folder to train again")
    done = last.is_file() and load_checkpoint(last)["epoch"] >= plan["epochs"]
    print(f"{cfg.name}: {plan['train_images_per_s']:.1f} train / {plan['eval_images_per_s']:.1f} eval images/s "
          f"measured on {plan['device']} -> {plan['epochs']} epoch(s) of {split.n_train} images "
          + (f"in {plan['minutes']:g} min" if plan.get("minutes") else "(fixed epoch count)")
          + (" (already trained)" if done else ""),
          flush=True)
    t0 = time.perf_counter()
    if not done:
        train(cfg, resume=resume, progress=progress)
    seconds = time.perf_counter() - t0
    history = load_checkpoint(last)["metrics"]["history"]
    trained_s = sum(h.get("epoch_seconds", 0.0) for h in history if h["epoch"] > 0)
    budget_s = 60.0 * plan["minutes"] if plan.get("minutes") else None
    return {"name": cfg.name, **plan, "budget_s": budget_s, "train_seconds": trained_s,
            "wall_seconds_this_run": seconds, "last_checkpoint": str(last),
            "best_checkpoint": str(Path(cfg.output_dir) / "best.pt"), "metrics_csv": str(Path(cfg.output_dir) /
                                                                                         "metrics.csv"),
            "last_epoch": history[-1] if history else None}


# ------------------------------------------------------------------------------------------------ whole recipe
def run_recipe(photo_root, experiments: dict, minutes: float, out_dir, work_dir, device: str = "cpu",
               baselines=DEFAULT_BASELINES, fprs=FPRS, aligned_root=None, align_size: int = 112,
               align_max_side: int | None = 1024, skip_align: bool = False, checkpoint: str = DEFAULT_CHECKPOINT,
               pairs_folds: int = 10, pairs_per_fold: int = 300, max_epochs: int | None = None,
               progress: bool = True, epochs: int | None = None, flip: bool = True) -> dict:
    """Run the whole recipe; returns a summary dict (also written to out_dir/summary.json).

    experiments: {name: experiment config}; their data section must agree on the split (the recipe sets the
        root; keep eval_identity_fraction / distractor_fraction / seed / filters the same for all).
    minutes: training budget per experiment (the total is len(experiments) x minutes); or None with ``epochs``:
        that many epochs per experiment whatever the machine's speed (reproducible tables).
    work_dir: aligned crops (work_dir/aligned-<size>, unless aligned_root) and runs (work_dir/runs/<name>).
    baselines: names for fr_lib.embedders.resolve.resolve_embedder (random-<backbone>, dlib-resnet, ...); one that cannot
        be built here (dlib not installed, weights not downloadable) gets a visible 'skipped' entry.
    checkpoint: 'last' (default, fr_lib.evaluation.held_out.DEFAULT_CHECKPOINT) or 'best' is evaluated.
    skip_align: photo_root already holds aligned crops (used as the data root as it is).
    flip: the flip test (default): every trained model's and random baseline's embedding of a crop is the mean of
        the crop's and its mirror's, as insightface evaluates (pretrained baselines with their own preprocessing
        keep theirs); False embeds the crop alone.

    Writes to out_dir: table.{md,csv,html} (TPR@FPR + ROC-AUC on the held-out identities) and results.json
    (fr_lib.evaluation.held_out.write_report), verification.{md,csv}
    (10-fold accuracy, EER, AUC on pairs.txt), pairs.txt, roc_curves.png, similarity_distributions.png,
    training_<name>.png, summary.json.
    """
    import matplotlib
    matplotlib.use("Agg")

    from fr_lib.data.lfw_pairs import read_lfw_pairs, write_lfw_pairs
    from fr_lib.evaluation.pair_verification import pair_scores, score_pairs, verification_markdown
    from fr_lib.evaluation.plots import plot_training_curves
    from fr_lib.evaluation.report import comparison_table, to_csv

    run_checkpoint(".", checkpoint)   # ValueError for anything but 'last' / 'best', before any work
    if not experiments and not baselines:
        raise ValueError("nothing to run: no experiment and no baseline")
    from fr_lib.embedders.resolve import PRETRAINED, RANDOM_PREFIX
    unknown = [b for b in baselines if b not in PRETRAINED and not b.startswith(RANDOM_PREFIX)
               and not Path(b).is_file()]
    if unknown:   # before hours of alignment and training
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {sorted(PRETRAINED)}, random-<backbone> "
                         f"or a checkpoint file")
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict = {"photo_root": str(photo_root), "minutes_per_experiment": minutes, "device": device,
                     "flip_test": bool(flip),
                     "experiments": {}, "baselines": {}, "skipped": {}}
    t_start = time.perf_counter()

    # 1. align
    if skip_align:
        data_root = Path(photo_root)
    else:
        data_root = Path(aligned_root) if aligned_root else work_dir / f"aligned-{align_size}"
        t0 = time.perf_counter()
        al = align_photos(photo_root, data_root, size=align_size, device=device, max_side=align_max_side,
                          progress=progress)
        print(al, flush=True)
        summary["align"] = {"aligned_root": str(data_root), "total": al.total, "aligned": al.aligned,
                            "skipped": al.skipped, "seconds_this_run": time.perf_counter() - t0}

    # 2. split (shared by every experiment)
    cfgs = {name: cfg.replace(**{"data.root": str(data_root), "train.device": device,
                                 "train.output_dir": str(work_dir / "runs" / name)})
            for name, cfg in experiments.items()}
    ref = next(iter(cfgs.values())).data if cfgs else None
    if ref is None:   # baselines only: the DataConfig defaults the small preset keeps
        from types import SimpleNamespace
        ref = SimpleNamespace(root=str(data_root), min_images_per_identity=2, max_images_per_identity=None,
                              max_identities=None, eval_identity_fraction=0.2, distractor_fraction=0.5,
                              val_fraction=0.1, seed=0)
    for name, cfg in cfgs.items():
        differ = split_differences(ref, cfg.data)
        if differ:
            raise ValueError(f"experiment {name} splits the data differently ({'; '.join(differ)}); the recipe "
                             f"compares models on one shared split")
    split = split_for(ref)
    summary["split"] = split.describe()
    print(f"split: {len(split.train_classes)} training identities ({split.n_train} train + {split.n_val} val "
          f"images); held out: {len(split.query_classes)} query identities ({len(split.query)} images), "
          f"{len(split.distractor_classes)} distractor identities ({len(split.distractors)} images)", flush=True)

    # 3. train
    for name, cfg in cfgs.items():
        rec = train_within_budget(cfg, minutes, split, progress=progress, max_epochs=max_epochs, epochs=epochs)
        summary["experiments"][name] = rec
        try:
            save_figure(plot_training_curves(rec["metrics_csv"], title=name),
                        out_dir / f"training_{safe_filename(name)}.png")
        except (ValueError, FileNotFoundError) as e:
            print(f"training curves of {name} not drawn: {e}")

    # 4. pairs file of the held-out identities (LFW View 2 format)
    pairs_txt = out_dir / "pairs.txt"
    pinfo = write_lfw_pairs(data_root, pairs_txt, folds=pairs_folds, pairs_per_fold=pairs_per_fold, seed=ref.seed,
                            identities=split.held_out_classes)
    pairs = read_lfw_pairs(pairs_txt, data_root)
    summary["pairs"] = {k: pinfo[k] for k in ("path", "folds", "pairs_per_fold", "identity_disjoint")}

    # 5. evaluate: ID rate on the held-out query / distractor sets, and LFW-style verification on pairs.txt
    cache = out_dir / "cache"
    verification = {}

    def score_pairs_file(name, model, meta):
        scores = pair_scores(model, {**meta, "name": meta.get("name") or name}, pairs, device=device, flip=flip,
                             cache_path=cache / f"{safe_filename(name)}-pairs{'-flip' if flip else ''}.npz",
                             progress=progress,
                             raw_root=photo_root)
        verification[name] = v = score_pairs(scores, [p.issame for p in pairs], [p.fold for p in pairs])
        print(f"{name}: pairs: 10-fold accuracy {v.accuracy:.4f} +- {v.accuracy_std:.4f}, EER {v.eer:.4f}",
              flush=True)

    trained = {name: run_checkpoint(cfgs[name].output_dir, checkpoint) for name in summary["experiments"]}
    ev = evaluate_models(trained, split, {name: name for name in baselines}, device=device, fprs=fprs,
                         cache_dir=cache, flip=flip, per_model=score_pairs_file,
                         log=lambda m: print(m, flush=True),
                         progress=progress, raw_root=photo_root)
    summary["skipped"] = ev.skipped
    if not ev.results:
        raise ValueError(f"no model could be evaluated (skipped: {summary['skipped']})")

    # 6. tables and figures
    paths = write_report(out_dir, ev.results, ev.embeddings, ev.notes, sources=ev.sources, split=split,
                         title=f"ROC on held-out identities of {Path(photo_root).name}")
    models = json.loads(paths["results.json"].read_text())["models"]
    for name, entry in models.items():
        entry = {**entry, "pairs": verification[name].as_dict()}
        (summary["experiments"][name].update(eval=entry) if name in summary["experiments"]
         else summary["baselines"].update({name: {"eval": entry}}))
    vdf = comparison_table({name: v.table_row() for name, v in verification.items()})
    atomic_write(out_dir / "verification.md", verification_markdown(vdf))
    to_csv(vdf, out_dir / "verification.csv")
    table = paths["table.md"].read_text()
    summary["total_seconds_this_run"] = time.perf_counter() - t_start
    summary["table_markdown"] = table
    atomic_write(out_dir / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    print(table)
    print((out_dir / "verification.md").read_text())
    print(f"wrote table.md/.csv/.html, results.json, verification.md/.csv, pairs.txt, roc_curves.png, "
          f"similarity_distributions.png, training_*.png and summary.json to {out_dir}")
    return summary
