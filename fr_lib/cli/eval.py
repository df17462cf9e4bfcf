"""``fr eval``: the comparison table (TPR@FPR per FPR + ROC-AUC), ROC curves and similarity distributions.

    fr eval --experiments ce-efficientnet,arcface-efficientnet,random-inception_resnet_v1 --out id_rate/
    fr eval --experiments ce-efficientnet --query QUERY_ROOT --distractors DISTRACTOR_ROOT --out DIR
    fr eval --embeddings ce=runs/ce.npz,arcface=runs/arc.npz --out DIR   # arrays embeddings, labels, is_distractor
    fr eval --experiments ce-efficientnet,dlib-resnet --pairs pairs.txt --data ROOT --out DIR   # LFW-style

An experiment is evaluated on the identities its training run held out (the open-set split stored in its
checkpoint's config, on --data ROOT if given, else on the run's own data root), or on --query / --distractors
folders. Besides experiment names: ``random-<backbone>`` (randomly initialised, seed 0: the chance-level row),
``facenet-vggface2`` / ``facenet-casia-webface`` (pretrained; skipped with a reason when offline), ``dlib-resnet``
and checkpoint paths (fr_lib.embedders.resolve.resolve_embedder).
After each experiment the cosine threshold at FPR = 0.01 is written to runs/<name>/threshold.json (used by
``fr compare`` and ``fr recognize``). Writes table.md, table.csv, table.html, results.json, roc_curves.png and
similarity_distributions.png under --out.
With --pairs (an LFW View-2 pairs file whose names resolve under --data, e.g. LFW itself or one written by
fr_lib.data.lfw_pairs.write_lfw_pairs): 10-fold verification accuracy, EER and ROC-AUC per model instead, written to
verification.md, verification.csv and verification.json under --out.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from fr_lib.io import atomic_write, save_figure

DEFAULT_FPRS = "0.5,0.25,0.1,0.05,0.01,0.005,0.001"
THRESHOLD_FPR = 0.01


class EvalError(Exception):
    """A user-facing problem: printed as 'error: ...' with exit status 2."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="TPR@FPR comparison table, ROC curves and similarity distributions",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--experiments", metavar="A,B,C",
                     help="comma-separated experiment names (config.EXPERIMENTS), checkpoint paths, random-<backbone>, "
                          "facenet-vggface2, facenet-casia-webface, dlib-resnet")
    src.add_argument("--embeddings", metavar="[NAME=]FILE.npz,...",
                     help="precomputed embeddings: .npz files with arrays embeddings (N, D), labels (N,), "
                          "is_distractor (N,) bool")
    p.add_argument("--data", metavar="ROOT", help="dataset root to take the held-out query/distractor identities from")
    p.add_argument("--query", metavar="ROOT", help="query folder ROOT/<identity>/<image> (with --distractors)")
    p.add_argument("--distractors", metavar="ROOT", help="distractor folder (identities not in --query)")
    p.add_argument("--pairs", metavar="PAIRS.txt",
                   help="LFW View-2 pairs file: 10-fold accuracy, EER and AUC instead of the ID-rate table "
                        "(needs --experiments and --data ROOT, the folder the pair names refer to)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for tables and figures")
    p.add_argument("--fprs", default=DEFAULT_FPRS, help=f"comma-separated FPRs (default {DEFAULT_FPRS})")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--flip", action="store_true", help="average each embedding with its horizontal flip's")
    p.add_argument("--no-cache", action="store_true", help="recompute embeddings even when cached under --out")
    p.add_argument("--no-threshold", action="store_true", help="do not write runs/<name>/threshold.json")
    p.add_argument("--chunk-size", type=int, default=1 << 20, help="similarity values per block (memory ~12 B each)")
    p.set_defaults(func=eval_command)


def _device(name: str) -> str:
    from fr_lib.device import resolve_device_name

    try:
        return resolve_device_name(name)
    except ValueError as e:
        raise EvalError(str(e)) from e


def _parse_fprs(text: str) -> list[float]:
    try:
        fprs = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise EvalError(f"--fprs must be comma-separated numbers, got {text!r}") from e
    bad = [f for f in fprs if not 0 < f <= 1]
    if not fprs or bad:
        raise EvalError(f"--fprs values must lie in (0, 1], got {bad or text!r}")
    return fprs


def _named(items: str) -> list[tuple[str, str]]:
    out = []
    for item in (x.strip() for x in items.split(",")):
        if item:
            name, _, value = item.rpartition("=")
            out.append((name or Path(value).stem, value))
    if not out:
        raise EvalError("nothing to evaluate")
    return out


def load_embeddings_npz(path: str | Path):
    """(query_emb, query_labels, distractor_emb) from an .npz with embeddings, labels, is_distractor."""
    import numpy as np
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"embeddings file not found: {path}")
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("embeddings", "labels", "is_distractor") if k not in z]
        if missing:
            raise EvalError(f"{path} lacks array(s) {missing}; expected embeddings (N, D), labels (N,), "
                            f"is_distractor (N,) bool; found {sorted(z.files)}")
        emb, labels, is_d = z["embeddings"], z["labels"], z["is_distractor"].astype(bool)
    if emb.ndim != 2 or labels.shape != (len(emb),) or is_d.shape != (len(emb),):
        raise EvalError(f"{path}: shapes disagree: embeddings {emb.shape}, labels {labels.shape}, "
                        f"is_distractor {is_d.shape}")
    return emb[~is_d], labels[~is_d], emb[is_d]


# ------------------------------------------------------------------------------------------- experiments
def _model_for(name: str, device: str):
    """(model, image_size, normalization, checkpoint path or None, data config dict or None) through
    fr_lib.embedders.resolve.resolve_embedder: registered experiments, checkpoint paths, random-<backbone>,
    facenet-vggface2 / facenet-casia-webface, dlib-resnet."""
    import config
    from fr_lib.embedders.resolve import resolve_embedder

    def checkpoint_for(n):
        return config.get_experiment(n).checkpoint   # KeyError (a LookupError) for names that are not experiments

    try:
        model, meta = resolve_embedder(name, device=device, runs_dir=config.RUNS_DIR, checkpoint_for=checkpoint_for)
    except (ValueError, FileNotFoundError) as e:
        raise EvalError(str(e)) from e
    ckpt = Path(meta["checkpoint"]) if meta.get("checkpoint") else None
    data_cfg = (meta.get("config") or {}).get("data")
    return model, meta["image_size"], meta["normalization"], ckpt, data_cfg


def _split_samples(args, data_cfg: dict | None):
    """(index root, query samples, distractor samples) for one experiment."""
    from fr_lib.data import open_set_split, scan_folder
    if args.query:
        q, d = scan_folder(args.query), scan_folder(args.distractors)
        return [(q, q.samples), (d, d.samples)]
    if data_cfg is None:   # random baseline without a trained experiment: DataConfig defaults
        import dataclasses

        import config
        data_cfg = dataclasses.asdict(config.DataConfig())
    root = args.data or data_cfg["root"]
    index = scan_folder(root, min_images_per_identity=data_cfg.get("min_images_per_identity", 1),
                        max_images_per_identity=data_cfg.get("max_images_per_identity"),
                        max_identities=data_cfg.get("max_identities"))
    split = open_set_split(index, data_cfg["eval_identity_fraction"], data_cfg["distractor_fraction"],
                           data_cfg["seed"])
    return [(index, split.query), (index, split.distractors)]


def _embed_experiment(name: str, args, device: str, out: Path, first_data_cfg):
    import numpy as np

    from fr_lib.data import FaceFolder, build_transforms
    from fr_lib.evaluation.embed import checkpoint_fingerprint, extract_embeddings

    model, image_size, normalization, ckpt, data_cfg = _model_for(name, device)
    parts = _split_samples(args, data_cfg or first_data_cfg)
    tf = build_transforms(normalization, image_size, train=False)
    embs = []
    for kind, (index, samples) in zip(("query", "distractors"), parts):
        if not samples:
            if kind == "query":
                raise EvalError(f"{name}: the query set is empty (no held-out query identities under {index.root})")
            embs.append(None)
            continue
        ds = FaceFolder(index, transform=tf, samples=samples)
        safe = re.sub(r"[^\w.-]+", "_", name).strip("_")          # checkpoint paths as names
        cache = None if args.no_cache else out / "cache" / f"{safe}-{kind}{'-flip' if args.flip else ''}.npz"
        key = checkpoint_fingerprint(ckpt) if ckpt else name
        embs.append(extract_embeddings(model, ds, device=device, flip=args.flip, batch_size=args.batch_size,
                                       cache_path=cache, cache_key=key, progress=True))
        if ds.load_errors:
            print(f"warning: {name}: {len(ds.load_errors)} unreadable {kind} images replaced", file=sys.stderr)
    q, d = embs
    dist = d.embeddings if d is not None else np.zeros((0, q.embeddings.shape[1]), np.float32)
    return (q.embeddings, q.labels, dist), ckpt, data_cfg


def write_threshold(checkpoint: Path, result, embedding_size: int, data: str) -> Path:
    """runs/<name>/threshold.json: the cosine threshold at FPR = 0.01 (strict '>' means same identity)."""
    k = [float(f) for f in result.fprs].index(THRESHOLD_FPR)
    info = {"fpr": THRESHOLD_FPR, "threshold": float(result.thresholds[k]), "tpr": float(result.tprs[k]),
            "embedding_size": int(embedding_size), "n_positives": result.n_positives,
            "n_negatives": result.n_negatives, "evaluated_on": data, "rule": "same identity if cosine > threshold"}
    return atomic_write(checkpoint.parent / "threshold.json", json.dumps(info, indent=2) + "\n")


# ------------------------------------------------------------------------------------------- command
def eval_command(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except EvalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:   # bad data / embeddings reported by the library
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run_pairs(args) -> int:
    """--pairs: LFW protocol (fr_lib.evaluation.pair_verification) for every model of --experiments."""
    from fr_lib.evaluation.pair_verification import verification_markdown, verify_pairs
    from fr_lib.evaluation.report import comparison_table, to_csv

    if not args.experiments:
        raise EvalError("--pairs needs --experiments (models to embed the pair images with)")
    if not args.data:
        raise EvalError("--pairs needs --data ROOT: the folder the names in the pairs file refer to")
    if args.query or args.distractors:
        raise EvalError("--pairs replaces --query/--distractors")
    if not Path(args.pairs).is_file():
        raise EvalError(f"pairs file not found: {args.pairs}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = _device(args.device)
    names = [x.strip() for x in args.experiments.split(",") if x.strip()]
    if not names:
        raise EvalError("--experiments is empty")
    rows, summary = {}, {}
    for name in names:
        try:
            model, image_size, normalization, ckpt, _ = _model_for(name, device)
        except (ImportError, RuntimeError) as e:   # pretrained weights offline, optional dlib extra missing
            print(f"skipped {name}: {e}", file=sys.stderr)
            summary[name] = {"skipped": str(e)}
            continue
        meta = {"name": name, "image_size": image_size, "normalization": normalization,
                "checkpoint": str(ckpt) if ckpt else None}
        cache = None if args.no_cache else out / "cache" / f"{_safe_name(name)}-pairs{'-flip' if args.flip else ''}.npz"
        res = verify_pairs(model, meta, args.pairs, args.data, device=device, batch_size=args.batch_size,
                           flip=args.flip, cache_path=cache)
        rows[name] = res.table_row()
        summary[name] = {**res.as_dict(), "source": str(ckpt or name)}
        print(f"{name}: {res.n_pairs} pairs in {res.n_folds} folds: 10-fold accuracy {res.accuracy:.4f} "
              f"+- {res.accuracy_std:.4f}, EER {res.eer:.4f}, ROC-AUC {res.roc_auc:.4f}", flush=True)
    if not rows:
        raise EvalError(f"every model was skipped: {summary}")
    df = comparison_table(rows)
    md = verification_markdown(df)
    atomic_write(out / "verification.md", md)
    to_csv(df, out / "verification.csv")
    atomic_write(out / "verification.json", json.dumps(summary, indent=2) + "\n")
    print(md)
    print(f"wrote verification.md, verification.csv, verification.json to {out}")
    return 0


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _run(args) -> int:
    import matplotlib
    matplotlib.use("Agg")

    from fr_lib.evaluation.metrics import identification_rate
    from fr_lib.evaluation.plots import plot_roc, plot_similarity_distributions
    from fr_lib.evaluation.report import comparison_table, to_markdown, write_table

    if args.pairs:
        return _run_pairs(args)
    fprs = _parse_fprs(args.fprs)
    if bool(args.query) != bool(args.distractors):
        raise EvalError("--query and --distractors go together")
    if args.query and args.data:
        raise EvalError("use either --data or --query/--distractors")
    if args.embeddings and (args.query or args.data):
        raise EvalError("--embeddings already holds the query/distractor split; drop --data/--query")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fprs_run = sorted(set(fprs) | {THRESHOLD_FPR}, reverse=True)
    device = _device(args.device)

    results, embeddings, summary = {}, {}, {}
    first_data_cfg = None
    if args.embeddings:
        jobs = [(name, path) for name, path in _named(args.embeddings)]
    else:
        jobs = [(name, None) for name in (x.strip() for x in args.experiments.split(",")) if name]
        if not jobs:
            raise EvalError("--experiments is empty")
    skipped = {}
    for name, path in jobs:
        ckpt = None
        if path is not None:
            q, labels, d = load_embeddings_npz(path)
        else:
            try:
                (q, labels, d), ckpt, data_cfg = _embed_experiment(name, args, device, out, first_data_cfg)
            except (ImportError, RuntimeError) as e:   # pretrained weights offline, optional dlib extra missing
                print(f"skipped {name}: {e}", file=sys.stderr)
                skipped[name] = str(e)
                continue
            first_data_cfg = first_data_cfg or data_cfg
        try:
            r = identification_rate(q, labels, d, fprs_run, chunk_size=args.chunk_size,
                                    device="cpu" if device == "cpu" else device, progress=True)
        except ValueError as e:
            raise EvalError(f"{name}: {e}") from e
        keep = [fprs_run.index(f) for f in fprs]
        table_r = type(r)(**{**r.__dict__, "fprs": r.fprs[keep], "thresholds": r.thresholds[keep],
                             "tprs": r.tprs[keep], "ranks": r.ranks[keep]})
        results[name], embeddings[name] = table_r, (q, labels, d)
        summary[name] = {"tpr_at_fpr": dict(zip(map(str, fprs), map(float, table_r.tprs))),
                         "thresholds": dict(zip(map(str, fprs), map(float, table_r.thresholds))),
                         "roc_auc": r.roc_auc, "roc_auc_max_error": r.roc_auc_max_error,
                         "n_query": int(len(q)), "n_distractors": int(len(d)), "n_positives": r.n_positives,
                         "n_negatives": r.n_negatives, "source": str(path or ckpt or name)}
        if ckpt is not None and not args.no_threshold:
            p = write_threshold(ckpt, r, q.shape[1], str(args.data or args.query or "training split"))
            summary[name]["threshold_file"] = str(p)
        print(f"{name}: {len(q)} query / {len(d)} distractor images, {r.n_positives} positive and "
              f"{r.n_negatives} negative pairs, ROC-AUC {r.roc_auc:.4f}", flush=True)

    if not results:
        raise EvalError(f"every model was skipped: {skipped}")
    summary.update({name: {"skipped": reason} for name, reason in skipped.items()})
    df = comparison_table(results)
    write_table(df, out)
    atomic_write(out / "results.json", json.dumps(summary, indent=2) + "\n")
    for fig, fname in ((plot_roc(results), "roc_curves.png"),
                       (plot_similarity_distributions(embeddings), "similarity_distributions.png")):
        save_figure(fig, out / fname)
    print(to_markdown(df))
    print(f"wrote table.md, table.csv, table.html, results.json, roc_curves.png, similarity_distributions.png "
          f"to {out}")
    return 0
