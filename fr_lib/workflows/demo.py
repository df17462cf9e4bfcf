"""The main job as library pieces: make the synthetic dataset, train a matrix of experiments (reusing finished
runs), and compare them beside baselines on the held-out identities (fr_lib.evaluation.held_out).

    >>> ensure_synthetic_dataset("data/synth-demo", identities=200, images_per_identity=30)
    >>> runs = {display_name(c.loss.name, c.model.backbone): train_or_reuse(c) for c in configs}
    >>> split = fr_lib.evaluation.held_out.held_out_split(configs[0].data)   # query / distractor identities
    >>> ev, paths = evaluate_and_report({row: run_checkpoint(c.output_dir) for row, c in ...}, split,
    ...                                 ["random-inception_resnet_v1"], {"efficientnet_b0": 64}, "id_rate/")

fr_lib does not import config: callers pass configs (config.ExperimentConfig or anything with the same fields).
Used by ``fr demo`` (fr_lib/cli/demo.py) and by id_rate/id_rate.ipynb, which evaluate the same checkpoint by default
(fr_lib.evaluation.held_out.DEFAULT_CHECKPOINT, where the choice is explained).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from fr_lib.evaluation.held_out import DEFAULT_CHECKPOINT, evaluate_models, run_checkpoint, write_report
from fr_lib.io import write_json
SYNTH_MARKER = ".fr-synth.json"     # ROOT + this, beside ROOT (not inside: scans report files outside identity
                                    # folders), written last by ensure_synthetic_dataset: the dataset is complete
DEMO_MARKER = "fr-demo.json"        # in a run folder: the run was made by `fr demo` (safe to replace)

LOSS_NAMES = {"ce": "CE", "triplet": "Triplet", "arcface": "ArcFace", "cosface": "CosFace",
              "contrastive": "Contrastive"}
BACKBONE_NAMES = {"efficientnet_b0": "EfficientNet", "inception_resnet_v1": "InceptionResnetV1"}
BASELINE_NAMES = {"random-inception_resnet_v1": "InceptionResnetV1 with random weights",
                  "random-efficientnet_b0": "EfficientNet with random weights",
                  "dlib-resnet": "dlib ResNet (pretrained)",
                  "facenet-vggface2": "facenet InceptionResnetV1 pretrained on VGGFace2",
                  "facenet-casia-webface": "facenet InceptionResnetV1 pretrained on CASIA-WebFace"}


def display_name(loss: str, backbone: str) -> str:
    """'CE / EfficientNet'-style row name of the published table."""
    return f"{LOSS_NAMES.get(loss, loss)} / {BACKBONE_NAMES.get(backbone, backbone)}"


# ------------------------------------------------------------------------------------------------ data
def ensure_synthetic_dataset(root, identities: int, images_per_identity: int, size: int = 112, seed: int = 0,
                             workers: int | None = None, progress: bool = True) -> dict:
    """Generate the synthetic dataset (fr_lib.data.synth) into ``root`` unless a complete one with the same parameters
    is there (a marker file written after the last image), or one with at least these identities and images
    (``fr data synth``'s, without the marker; use max_identities / max_images_per_identity to read a subset). An
    interrupted generation is redone (the generator is deterministic, so the files come out identical).
    Returns {'root', 'reused', 'images', 'seconds'}."""
    from fr_lib.data.synth import generate_dataset

    root = Path(root)
    params = {"identities": identities, "images_per_identity": images_per_identity, "size": size, "seed": seed}
    marker = synth_marker(root)
    if marker.is_file():
        try:
            if (json.loads(marker.read_text()).get("params") == params
                    and _holds_synthetic(root, identities, images_per_identity)):   # the folder may be gone
                return {"root": str(root), "reused": True, "images": identities * images_per_identity,
                        "seconds": 0.0}
        except (OSError, ValueError):
            pass
        marker.unlink()
    elif _holds_synthetic(root, identities, images_per_identity):
        # e.g. written by `fr data synth` with at least these counts: the generator is deterministic per
        # (seed, identity, image), so the first identities' first images are the ones asked for
        return {"root": str(root), "reused": True, "images": identities * images_per_identity, "seconds": 0.0}
    summary = generate_dataset(root, identities, images_per_identity, size=size, seed=seed, workers=workers,
                               progress=progress)
    write_json(marker, {"params": params, "images": summary["images"]})
    return {"root": str(root), "reused": False, "images": summary["images"], "seconds": summary["seconds"]}


def synth_marker(root) -> Path:
    """The completeness marker of a synthetic dataset folder: ``<root>.fr-synth.json`` beside it."""
    root = Path(root)
    return root.with_name(root.name + SYNTH_MARKER)


def _holds_synthetic(root: Path, identities: int, images_per_identity: int) -> bool:
    from fr_lib.data.synth import identity_name

    return all((root / identity_name(i) / f"{j:04d}.jpg").is_file()
               for i in range(identities) for j in (0, images_per_identity - 1))


def notebook_overrides(experiment: str, device: str = "auto", data_root=None, epochs=None, runs_dir=None,
                       overrides: dict | None = None, **loss_options) -> dict:
    """Dotted config overrides from a training notebook's parameters (None keeps the preset's value): data_root ->
    data.root, epochs -> train.epochs, runs_dir -> train.output_dir = runs_dir/experiment, loss options (scale,
    margin, mining) -> loss.<name>; ``overrides`` (dotted) win."""
    ov = {"train.device": device}
    if data_root:
        ov["data.root"] = str(data_root)
    if epochs:
        ov["train.epochs"] = int(epochs)
    if runs_dir:
        ov["train.output_dir"] = str(Path(runs_dir) / experiment)
    ov.update({f"loss.{k}": v for k, v in loss_options.items() if v is not None})
    return {**ov, **(overrides or {})}


# ------------------------------------------------------------------------------------------------ training
# fields that do not change the trained model: a run differing only there is the same run
_RUN_INDEPENDENT_KEYS = frozenset({"train.device", "data.num_workers", "train.val_targets"})   # do not change the weights


def run_state(cfg) -> tuple[str, dict | None]:
    """State of cfg's run folder: 'absent' (no last.pt), 'finished' (same config, all epochs done), 'partial'
    (same config, fewer epochs: resumable), 'demo-other' (made by fr demo with another config: replaceable) or
    'foreign' (another config, not made by fr demo: left alone). Returns (state, last.pt's 'metrics')."""
    from fr_lib.training.checkpoint import config_differences, load_checkpoint

    out = Path(cfg.output_dir)
    last = out / "last.pt"
    if not last.is_file():
        return "absent", None
    ckpt = load_checkpoint(last)
    if config_differences(ckpt.get("config", {}), cfg.to_dict(), ignore=_RUN_INDEPENDENT_KEYS):
        return ("demo-other" if (out / DEMO_MARKER).is_file() else "foreign"), ckpt.get("metrics")
    done = int(ckpt.get("epoch", 0)) >= cfg.train.epochs or ckpt.get("stopped_early", False)
    return ("finished" if done and (out / "best.pt").is_file() else "partial"), ckpt.get("metrics")


def train_or_reuse(cfg, retrain: bool = False, progress: bool = True) -> dict:
    """Train cfg unless its run folder already holds the finished run (resume a partial one). A run folder with
    a different config is replaced when fr demo made it (or with ``retrain``); otherwise ValueError (never
    overwrite somebody's run). Returns {'state' ('reused' | 'resumed' | 'trained'), 'checkpoint', 'history',
    'seconds' (this call's training time), 'train_seconds' (sum of the run's epoch times)}."""
    from fr_lib.training.loop import train

    out = Path(cfg.output_dir)
    state, metrics = run_state(cfg)
    if state == "foreign" and not retrain:
        raise ValueError(f"{out} holds a run with another config that fr demo did not make; pass --retrain to "
                         f"replace it, or --runs DIR to train elsewhere")
    t0 = time.perf_counter()
    if state == "finished" and not retrain:
        history = list(metrics["history"])
        action = "reused"
    else:
        resume = state == "partial" and not retrain
        if not resume:
            for name in ("last.pt", "best.pt", "metrics.csv", DEMO_MARKER):
                (out / name).unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / DEMO_MARKER, {"made_by": "fr demo", "config": cfg.to_dict()})
        summary = train(cfg, resume=resume, progress=progress)
        history = summary["history"]
        action = "resumed" if resume else "trained"
    return {"state": action, "checkpoint": out / "best.pt", "history": history,
            "seconds": time.perf_counter() - t0,
            "train_seconds": float(sum(h.get("epoch_seconds", 0.0) or 0.0 for h in history))}


def training_summary(history: list[dict]) -> dict:
    """Headline numbers of a run's history: epochs, best epoch (fr_lib.training.log.best_epoch: the epoch best.pt
    holds), its val loss / closed-set val accuracy / open-set TPR@FPR, mean train images/s, train time (s)."""
    from fr_lib.training.log import best_epoch

    trained = [h for h in history if h.get("epoch", 0) > 0]
    if not trained:
        return {}
    epoch = best_epoch(trained)
    best = next((h for h in trained if h["epoch"] == epoch), {})
    speed = [h["train_images_per_s"] for h in trained if math.isfinite(h.get("train_images_per_s", math.nan))]
    tpr_key = next((k for k in best if k.startswith("tpr@fpr=")), None)
    return {"epochs": len(trained), "best_epoch": epoch, "val_loss": best.get("val_loss"),
            "val_accuracy": best.get("val_accuracy"), "open_set_tpr": best.get(tpr_key) if tpr_key else None,
            "train_images_per_s": float(np.mean(speed)) if speed else math.nan,
            "train_seconds": float(sum(h.get("epoch_seconds", 0.0) for h in trained))}


# ------------------------------------------------------------------------------------------------ evaluation
MIN_IMAGE_SIZE = {"inception_resnet_v1": 80}   # px; smaller inputs shrink to nothing inside facenet's network


def baseline_image_size(key: str, trained_sizes: dict) -> int | None:
    """Input size (px) for baseline ``key`` beside trained runs {backbone: image_size}: a random-weights backbone
    sees what the trained runs of that backbone saw (else the largest trained size), at least the backbone's
    minimum; pretrained baselines (None) use their own input size."""
    if not key.startswith("random-"):
        return None
    backbone = key[len("random-"):]
    size = trained_sizes.get(backbone) or max(trained_sizes.values(), default=None)
    return None if size is None else max(int(size), MIN_IMAGE_SIZE.get(backbone, 0))


def quality_check(results: dict, trained: list[str], baseline: str, fpr: float = 0.01, factor: float = 3.0):
    """[(name, tpr, ok)] for each trained row: its TPR@fpr >= factor x the baseline row's."""
    def tpr(r):
        return float(r.tprs[list(np.asarray(r.fprs, float)).index(fpr)])

    base = tpr(results[baseline])
    return [(n, tpr(results[n]), tpr(results[n]) >= factor * base) for n in trained if n in results], base


def baseline_sources(keys, trained_sizes: dict) -> dict:
    """{row name (BASELINE_NAMES): resolve_embedder source} of baseline keys; a random-weights backbone is asked
    for at baseline_image_size (random-<backbone>@<px>)."""
    out = {}
    for key in keys:
        size = baseline_image_size(key, trained_sizes)
        out[BASELINE_NAMES.get(key, key)] = f"{key}@{size}" if size else key
    return out


def find_runs(runs_dir, experiments, checkpoint: str = DEFAULT_CHECKPOINT) -> tuple[dict, list[str]]:
    """Trained runs under runs_dir: ({row name: {'checkpoint', 'experiment', 'backbone', 'image_size',
    'history'}}, [a message per experiment without that checkpoint]). Row names are display_name's, with the
    experiment appended when two runs share one."""
    from fr_lib.training.checkpoint import load_checkpoint

    rows, missing = {}, []
    for exp in experiments:
        path = run_checkpoint(Path(runs_dir) / exp, checkpoint)
        if not path.is_file():
            missing.append(f"{exp}: no checkpoint at {path} (train it: fr train --experiment {exp})")
            continue
        ckpt = load_checkpoint(path)
        cfg = ckpt.get("config") or {}
        name = display_name(cfg["loss"]["name"], cfg["model"]["backbone"])
        if name in rows or any(n.startswith(name + " (") for n in rows):
            name = f"{name} ({exp})"
        rows[name] = {"checkpoint": path, "experiment": exp, "backbone": cfg["model"]["backbone"],
                      "image_size": cfg["data"]["image_size"], "data": cfg["data"],
                      "history": (ckpt.get("metrics") or {}).get("history", [])}
    return rows, missing


def evaluate_and_report(trained: dict, split, baselines, trained_sizes: dict, out_dir, device: str = "cpu",
                        cache_dir=None, training: dict | None = None, checkpoint: str = DEFAULT_CHECKPOINT,
                        progress: bool = True, log=print, raw_root=None):
    """The demo's evaluation: trained {row: checkpoint path} beside ``baselines`` (keys of BASELINE_NAMES, random
    weights at the trained input size) on ``split`` (fr_lib.evaluation.held_out.evaluate_models), then every
    artefact under out_dir (write_report). raw_root: the photos the split's crops were aligned from (pretrained
    baselines then get their own preprocessing, evaluate_models). Returns (Evaluation, {artefact: path})."""
    ev = evaluate_models(trained, split, baseline_sources(baselines, trained_sizes), device=device,
                         cache_dir=cache_dir, log=log, progress=progress, raw_root=raw_root)
    notes = {"evaluated checkpoint": checkpoint, **ev.notes}
    paths = write_report(out_dir, ev.results, ev.embeddings, notes, training=training, sources=ev.sources,
                         split=split)
    return ev, paths


def training_table(training: dict) -> str:
    """Markdown table of training summaries {row name: training_summary(...) (+ 'state')}."""
    lines = ["| model | epochs | best epoch | val accuracy | val loss | train images/s | train time (s) | run |",
             "|---|---|---|---|---|---|---|---|"]

    def f(v, fmt):
        return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)

    for name, s in training.items():
        lines.append(f"| {name} | {s.get('epochs', '')} | {s.get('best_epoch', '')} | "
                     f"{f(s.get('val_accuracy'), '.3f')} | {f(s.get('val_loss'), '.3f')} | "
                     f"{f(s.get('train_images_per_s'), '.1f')} | {f(s.get('train_seconds'), '.0f')} | "
                     f"{s.get('state', '')} |")
    return "\n".join(lines) + "\n"
