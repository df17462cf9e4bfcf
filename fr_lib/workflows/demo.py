"""The main job as library pieces: make the synthetic dataset, train a matrix of experiments (reusing finished
runs), embed the held-out identities with every model and baseline, and write the comparison artefacts.

    >>> ensure_synthetic_dataset("data/synth-demo", identities=200, images_per_identity=30)
    >>> runs = [train_or_reuse(cfg) for cfg in configs]                   # config.ExperimentConfig objects
    >>> index, split = held_out_split(configs[0].data)                    # query / distractor identities
    >>> emb = {display_name(c.loss.name, c.model.backbone): embed_held_out(*load_run(c), index, split)
    ...        for c in configs}
    >>> paths = write_report(identification_rates(emb), emb, "id_rate/")

fr_lib does not import config: callers pass configs (config.ExperimentConfig or anything with the same fields).
Used by ``fr demo`` (fr_lib/cli/demo.py) and by id_rate/id_rate.ipynb.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
from fr_lib.io import save_figure, write_json

FPRS = (0.5, 0.25, 0.1, 0.05, 0.01, 0.005, 0.001)
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


def held_out_split(data_cfg):
    """(FolderIndex, OpenSetSplit) of a DataConfig: the identities a training run with this config never saw
    (split.query, split.distractors) -- the same split fr_lib.training.loop uses."""
    from fr_lib.data import open_set_split, scan_folder

    index = scan_folder(data_cfg.root, min_images_per_identity=data_cfg.min_images_per_identity,
                        max_images_per_identity=data_cfg.max_images_per_identity,
                        max_identities=data_cfg.max_identities)
    return index, open_set_split(index, data_cfg.eval_identity_fraction, data_cfg.distractor_fraction,
                                 data_cfg.seed)


# ------------------------------------------------------------------------------------------------ training
# fields that do not change the trained model: a run differing only there is the same run
_RUN_INDEPENDENT_KEYS = frozenset({"train.device", "data.num_workers"})


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
    """Headline numbers of a run's history: epochs, best epoch (min val loss, train loss without val), its val
    loss / closed-set val accuracy / open-set TPR@FPR, mean train images/s."""
    trained = [h for h in history if h.get("epoch", 0) > 0]
    if not trained:
        return {}
    key = "val_loss" if all(math.isfinite(h.get("val_loss", math.nan)) for h in trained) else "train_loss"
    best = min(trained, key=lambda h: h[key])
    speed = [h["train_images_per_s"] for h in trained if math.isfinite(h.get("train_images_per_s", math.nan))]
    tpr_key = next((k for k in best if k.startswith("tpr@fpr=")), None)
    return {"epochs": len(trained), "best_epoch": best["epoch"], "val_loss": best.get("val_loss"),
            "val_accuracy": best.get("val_accuracy"), "open_set_tpr": best.get(tpr_key) if tpr_key else None,
            "train_images_per_s": float(np.mean(speed)) if speed else math.nan,
            "train_seconds": float(sum(h.get("epoch_seconds", 0.0) for h in trained))}


# ------------------------------------------------------------------------------------------------ evaluation
def eval_transform(normalization: str, image_size: int):
    """Eval transform of a model's normalization: fr_lib.data.build_transforms, plus 'unit' (images scaled to
    [0, 1], no mean/std: dlib-resnet), which build_transforms does not know."""
    from fr_lib.data import NORMALIZATIONS, build_transforms

    if normalization in NORMALIZATIONS:
        return build_transforms(normalization, image_size, train=False)
    if normalization != "unit":
        raise ValueError(f"unknown normalization {normalization!r}; expected {sorted(NORMALIZATIONS) + ['unit']}")
    import torch
    from torchvision.transforms import v2

    return v2.Compose([v2.ToImage(), v2.Resize((image_size, image_size), antialias=True),
                       v2.ToDtype(torch.float32, scale=True)])


def embed_held_out(model, meta: dict, index, split, device: str = "cpu", image_size: int | None = None,
                   batch_size: int = 64, cache_dir=None, cache_name: str | None = None, progress: bool = True):
    """(query_emb (Nq, D), query_labels (Nq,), distractor_emb (Nd, D)) float32 unit rows of the held-out sets.

    meta: resolve_embedder/load_embedder meta ('normalization', 'image_size' px; ``image_size`` overrides it).
    Embeddings are cached under cache_dir/<cache_name>-{query,distractors}.npz, keyed by the weights and data."""
    from fr_lib.data import FaceFolder
    from fr_lib.evaluation.embed import extract_embeddings

    if not split.query:
        raise ValueError(f"no held-out query identities under {index.root}: lower the identity filter or add "
                         f"identities")
    tf = eval_transform(meta["normalization"], int(image_size or meta["image_size"]))
    out = []
    for kind, samples in (("query", split.query), ("distractors", split.distractors)):
        if not samples:
            out.append(None)
            continue
        cache = (Path(cache_dir) / f"{cache_name}-{kind}.npz") if cache_dir and cache_name else None
        emb = extract_embeddings(model, FaceFolder(index, transform=tf, samples=samples), device=device,
                                 batch_size=batch_size, cache_path=cache, cache_key=image_size, progress=progress)
        out.append(emb)
    q, d = out
    dist = d.embeddings if d is not None else np.zeros((0, q.embeddings.shape[1]), np.float32)
    return q.embeddings, q.labels, dist


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


def identification_rates(embeddings: dict, fprs=FPRS, progress: bool = False) -> dict:
    """{name: (query, labels, distractors)} -> {name: fr_lib.evaluation.metrics.IDRateResult} (ID-rate protocol, docs/protocol.md)."""
    from fr_lib.evaluation.metrics import identification_rate

    return {name: identification_rate(q, labels, d, fprs=fprs, progress=progress)
            for name, (q, labels, d) in embeddings.items()}


def quality_check(results: dict, trained: list[str], baseline: str, fpr: float = 0.01, factor: float = 3.0):
    """[(name, tpr, ok)] for each trained row: its TPR@fpr >= factor x the baseline row's."""
    def tpr(r):
        return float(r.tprs[list(np.asarray(r.fprs, float)).index(fpr)])

    base = tpr(results[baseline])
    return [(n, tpr(results[n]), tpr(results[n]) >= factor * base) for n in trained if n in results], base


def write_report(results: dict, embeddings: dict, out_dir, notes: dict | None = None,
                 training: dict | None = None) -> dict:
    """Write into out_dir: table.md/.csv/.html (best of each column in bold), results.json (the numbers behind the
    table plus ``notes`` and ``training``), roc_curves.png (every model on one figure, linear and log FPR) and
    similarity_distributions.png. Returns {artefact: path}."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg",) and "inline" not in matplotlib.get_backend():
        matplotlib.use("Agg")

    from fr_lib.evaluation.plots import plot_roc, plot_similarity_distributions
    from fr_lib.evaluation.report import comparison_table, write_table

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = comparison_table(results)
    paths = {f"table.{k}": v for k, v in write_table(df, out).items()}
    summary = {name: {"tpr_at_fpr": {f"{f:g}": float(t) for f, t in zip(r.fprs, r.tprs)},
                      "thresholds": {f"{f:g}": float(t) for f, t in zip(r.fprs, r.thresholds)},
                      "roc_auc": float(r.roc_auc), "n_positives": int(r.n_positives),
                      "n_negatives": int(r.n_negatives), "n_query": int(len(embeddings[name][0])),
                      "n_distractors": int(len(embeddings[name][2]))}
               for name, r in results.items()}
    write_json(out / "results.json", {"models": summary, "notes": notes or {}, "training": training or {}})
    paths["results.json"] = out / "results.json"
    for fig, name in ((plot_roc(results, title="ROC on held-out identities (ID-rate protocol)"), "roc_curves.png"),
                      (plot_similarity_distributions(embeddings), "similarity_distributions.png")):
        save_figure(fig, out / name, dpi=110)
        paths[name] = out / name
    return paths


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
