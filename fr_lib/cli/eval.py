"""``fr eval``: the comparison table (TPR@FPR per FPR + ROC-AUC), ROC curves and similarity distributions.

    fr eval --experiments ce-efficientnet,arcface-efficientnet,random-inception_resnet_v1 --out id_rate/
    fr eval --experiments ce-efficientnet --query QUERY_ROOT --distractors DISTRACTOR_ROOT --out DIR
    fr eval --embeddings ce=runs/ce.npz,arcface=runs/arc.npz --out DIR   # arrays embeddings, labels, is_distractor
    fr eval --experiments ce-efficientnet,dlib-resnet --pairs pairs.txt --data ROOT --out DIR   # LFW-style
    fr eval --experiments arcface-iresnet50 --bin lfw,cfp_fp,agedb_30 --data data/casia-webface --out DIR

An experiment is evaluated on the identities its training run held out (the open-set split stored in its
checkpoint's config, on --data ROOT if given, else on the run's own data root), or on --query / --distractors
folders. Besides experiment names: ``random-<backbone>`` (randomly initialised, seed 0: the chance-level row),
``facenet-vggface2`` / ``facenet-casia-webface`` (pretrained; skipped with a reason when offline), ``dlib-resnet``
and checkpoint paths (fr_lib.embedders.resolve.resolve_embedder).
An experiment name evaluates the run's best.pt (the checkpoint fr compare / fr serve / fr recognize load); pass a
checkpoint path (runs/<name>/last.pt) for another. Every row is evaluated on one held-out split (the first
checkpoint's); a checkpoint trained with other split settings is listed as skipped.
After each checkpoint the cosine threshold at FPR = 0.01 is written to threshold.json beside it (used by
``fr compare``, ``fr serve`` and ``fr recognize``). Writes table.md, table.csv, table.html, results.json,
roc_curves.png and similarity_distributions.png under --out (fr_lib.evaluation.held_out.write_report).
With --pairs (an LFW View-2 pairs file whose names resolve under --data, e.g. LFW itself or one written by
fr_lib.data.lfw_pairs.write_lfw_pairs): 10-fold verification accuracy, EER and ROC-AUC per model instead, written to
verification.md, verification.csv and verification.json under --out.
With --bin (insightface .bin verification sets: paths, or names of .bin files in --data such as the CASIA-WebFace
download's lfw, cfp_fp, agedb_30): 10-fold accuracy with the flip test, as insightface reports it
(fr_lib.evaluation.bin_verification), one column per set in percent, written to bin_verification.md / .csv / .html
and bin_verification.json (with std, EER and ROC-AUC) under --out.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fr_lib.evaluation.held_out import FPRS
from fr_lib.evaluation.thresholds import THRESHOLD_FPR
from fr_lib.io import atomic_write, safe_filename

DEFAULT_FPRS = ",".join(f"{f:g}" for f in FPRS)


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
    src.add_argument("--model", metavar="MODEL.onnx",
                     help="an exported model (`fr export`) on onnxruntime: one row, evaluated on the held-out split "
                          "recorded in its contract (or --data / --query)")
    src.add_argument("--embeddings", metavar="[NAME=]FILE.npz,...",
                     help="precomputed embeddings: .npz files with arrays embeddings (N, D), labels (N,), "
                          "is_distractor (N,) bool")
    p.add_argument("--data", metavar="ROOT", help="dataset root to take the held-out query/distractor identities from")
    p.add_argument("--query", metavar="ROOT", help="query folder ROOT/<identity>/<image> (with --distractors)")
    p.add_argument("--distractors", metavar="ROOT", help="distractor folder (identities not in --query)")
    p.add_argument("--pairs", metavar="PAIRS.txt",
                   help="LFW View-2 pairs file: 10-fold accuracy, EER and AUC instead of the ID-rate table "
                        "(needs --experiments and --data ROOT, the folder the pair names refer to)")
    p.add_argument("--bin", metavar="A.bin,B.bin",
                   help="insightface .bin verification sets (paths, or names of .bin files in --data): 10-fold "
                        "accuracy with the flip test per model instead of the ID-rate table (needs --experiments)")
    p.add_argument("--score", choices=("cosine", "pair-probability"), default="cosine",
                   help="--pairs: score a pair by the cosine similarity of its embeddings, or by P(same) from the "
                        "pair-classifier head of a run trained with loss 'bce' (other models are skipped); the "
                        "ID-rate table always uses cosine similarity")
    p.add_argument("--raw", metavar="RAW_ROOT",
                   help="the photos --data was aligned from (fr align's SRC): pretrained baselines (dlib-resnet, "
                        "facenet-*) then get their own preprocessing from the source photos instead of our crops")
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


# ------------------------------------------------------------------------------------------- experiments
def _resolve(name, device: str):
    """fr_lib.embedders.resolve.resolve_embedder with config's experiments and runs folder -> (model, meta):
    registered experiments, checkpoint paths, random-<backbone>, facenet-vggface2 / facenet-casia-webface,
    dlib-resnet. Unknown names and missing checkpoints are EvalErrors."""
    import config
    from fr_lib.embedders.resolve import resolve_embedder

    def checkpoint_for(n):
        return config.get_experiment(n).checkpoint   # KeyError (a LookupError) for names that are not experiments

    try:
        return resolve_embedder(name, device=device, runs_dir=config.RUNS_DIR, checkpoint_for=checkpoint_for)
    except (ValueError, FileNotFoundError) as e:
        raise EvalError(str(e)) from e


def _model_for(name: str, device: str):
    """(model, image_size, normalization, checkpoint path or None, data config dict or None) of _resolve."""
    model, meta = _resolve(name, device)
    ckpt = Path(meta["checkpoint"]) if meta.get("checkpoint") else None
    data_cfg = (meta.get("config") or {}).get("data")
    return model, meta["image_size"], meta["normalization"], ckpt, data_cfg


def _held_out_sources(args, names: list[str], device: str):
    """(HeldOutSplit, {row: source}): --query/--distractors folders, else the split of the first checkpoint among
    ``names`` (on --data ROOT if given), else config.DataConfig's defaults (baselines only). The first checkpoint
    is resolved here once and handed on as (model, meta)."""
    from fr_lib.embedders.resolve import PRETRAINED, RANDOM_PREFIX
    from fr_lib.evaluation.held_out import folder_split, held_out_split

    sources = {name: name for name in names}
    if args.query:
        return folder_split(args.query, args.distractors), sources
    data_cfg = None
    for name in names:
        if name in PRETRAINED or name.startswith(RANDOM_PREFIX):
            continue
        try:
            model, meta = _resolve(name, device)
        except (ImportError, RuntimeError):   # listed as skipped by evaluate_models
            continue
        data_cfg = (meta.get("config") or {}).get("data")
        sources[name] = (model, meta)
        if data_cfg:
            break
    if data_cfg is None:   # random / pretrained baselines without a trained experiment: DataConfig defaults
        import dataclasses

        import config
        data_cfg = dataclasses.asdict(config.DataConfig())
    return held_out_split(data_cfg, root=args.data), sources


# ------------------------------------------------------------------------------------------- command
def eval_command(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except EvalError as e:
        from fr_lib.cli.fixes import with_fix

        print(f"error: {with_fix(e, 'eval')}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:   # bad data / embeddings reported by the library
        from fr_lib.cli.fixes import with_fix

        print(f"error: {with_fix(e, 'eval')}", file=sys.stderr)
        return 2


def _pair_probability(checkpoint, name: str):
    """score(a, b) for verify_pairs: P(same) of each row pair from the 'bce' run's head (its criterion state)."""
    import torch

    from fr_lib.losses.pair_classifier import load_pair_classifier

    if checkpoint is None:
        raise ValueError(f"{name} is not a trained checkpoint: it has no pair-classifier head")
    head = load_pair_classifier(checkpoint)

    def score(a, b):
        with torch.no_grad():
            return head.pair_probability(torch.from_numpy(a).float(), torch.from_numpy(b).float()).double().numpy()

    return score


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
        score = None
        if args.score == "pair-probability":
            try:
                score = _pair_probability(ckpt, name)
            except ValueError as e:   # not a 'bce' run: no head to score with
                print(f"skipped {name}: {e}", file=sys.stderr)
                summary[name] = {"skipped": str(e)}
                continue
        cache = None if args.no_cache else out / "cache" / f"{safe_filename(name)}-pairs{'-flip' if args.flip else ''}.npz"
        native: dict = {}
        res = verify_pairs(model, meta, args.pairs, args.data, device=device, batch_size=args.batch_size,
                           flip=args.flip, cache_path=cache, score=score, raw_root=args.raw, native_info=native)
        rows[name] = res.table_row()
        summary[name] = {**res.as_dict(), "source": str(ckpt or name), "score": args.score,
                         **({"input": native["preprocessing"], "fallbacks_to_crops": len(native["fallbacks"])}
                            if native else {})}
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


def _run_bin(args) -> int:
    """--bin: insightface .bin sets (fr_lib.evaluation.bin_verification) for every model of --experiments."""
    from fr_lib.evaluation.bin_verification import discover_val_targets, evaluate_bin_sets, write_bin_report

    if not args.experiments:
        raise EvalError("--bin needs --experiments (models to embed the pair images with)")
    if args.pairs or args.query or args.distractors:
        raise EvalError("--bin replaces --pairs and --query/--distractors")
    entries = [x.strip() for x in args.bin.split(",") if x.strip()]
    names = [x.strip() for x in args.experiments.split(",") if x.strip()]
    if not entries or not names:
        raise EvalError("--bin and --experiments need at least one entry each")
    paths = discover_val_targets(args.data, entries)   # FileNotFoundError -> exit 2 in eval_command
    out = Path(args.out)
    ev = evaluate_bin_sets(names, paths, _resolve, device=_device(args.device), batch_size=args.batch_size,
                           cache_dir=None if args.no_cache else out / "cache", log=print)
    if not ev.results:
        raise EvalError(f"every model was skipped: {ev.skipped}")
    files = write_bin_report(out, ev)
    print(files["md"].read_text())
    print(f"wrote {', '.join(p.name for p in files.values())} to {out}")
    return 0


def _run(args) -> int:
    from fr_lib.evaluation.held_out import HeldOutEmbeddings, evaluate_models, select_fprs, write_report
    from fr_lib.evaluation.report import comparison_table, to_markdown
    from fr_lib.evaluation.thresholds import write_threshold

    if getattr(args, "model", None):   # an exported model is one more thing --experiments resolves
        args.experiments = args.model
    if args.pairs:
        return _run_pairs(args)
    if args.bin:
        return _run_bin(args)
    fprs = _parse_fprs(args.fprs)
    if bool(args.query) != bool(args.distractors):
        raise EvalError("--query and --distractors go together")
    if args.query and args.data:
        raise EvalError("use either --data or --query/--distractors")
    if args.embeddings and (args.query or args.data):
        raise EvalError("--embeddings already holds the query/distractor split; drop --data/--query")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fprs_run = sorted(set(fprs) | {THRESHOLD_FPR}, reverse=True)   # the threshold file's FPR, reported or not
    device = _device(args.device)

    if args.embeddings:
        files = _named(args.embeddings)
        split, sources = None, {name: HeldOutEmbeddings.from_npz(path) for name, path in files}
    else:
        names = [x.strip() for x in args.experiments.split(",") if x.strip()]
        if not names:
            raise EvalError("--experiments is empty")
        split, sources = _held_out_sources(args, names, device)
    ev = evaluate_models(sources, split, device=device, fprs=fprs_run,
                         cache_dir=None if args.no_cache else out / "cache", batch_size=args.batch_size,
                         flip=args.flip, resolve=_resolve, metric_device=device, chunk_size=args.chunk_size,
                         log=print, progress=True, raw_root=args.raw)
    if not ev.results:
        raise EvalError(f"every model was skipped: {ev.skipped}")
    if args.embeddings:
        for name, path in files:
            ev.sources[name]["source"] = str(path)
    evaluated_on = str(args.data or args.query or "the run's held-out identities")
    for name, r in ev.results.items():
        if ev.sources[name]["kind"] == "checkpoint" and not args.no_threshold:
            p = write_threshold(ev.sources[name]["source"], r, ev.embeddings[name].query.shape[1], evaluated_on)
            ev.notes[name] = f"threshold at FPR={THRESHOLD_FPR:g} written to {p}"
    results = {name: select_fprs(r, fprs) for name, r in ev.results.items()}
    write_report(out, results, ev.embeddings, ev.notes, sources=ev.sources, split=split)
    print(to_markdown(comparison_table(results)))
    print(f"wrote table.md, table.csv, table.html, results.json, roc_curves.png, similarity_distributions.png "
          f"to {out}")
    return 0
