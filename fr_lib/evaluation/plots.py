"""Figures for reports: ROC curves of many models, similarity distributions, training curves.

Every function returns a matplotlib Figure; saving (``fig.savefig``) is the caller's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _roc_of(result) -> tuple[np.ndarray, np.ndarray, float | None, dict]:
    """(fpr, tpr, auc, protocol points {fpr: tpr}) from an IDRateResult, a dict with 'fpr'/'tpr' (+ 'auc') or a
    (fpr, tpr[, auc]) tuple."""
    if hasattr(result, "roc_curve"):
        fpr, tpr = result.roc_curve()
        return fpr, tpr, float(result.roc_auc), dict(zip(np.asarray(result.fprs), np.asarray(result.tprs)))
    if isinstance(result, dict):
        return np.asarray(result["fpr"]), np.asarray(result["tpr"]), result.get("auc"), {}
    fpr, tpr, *rest = result
    return np.asarray(fpr), np.asarray(tpr), (rest[0] if rest else None), {}


def plot_roc(results: dict, title: str = "ROC (open-set identification)", figsize=(12, 5),
             intervals: dict | None = None):
    """ROC curves of several models: linear FPR axis (left) and log FPR axis (right); AUC in the legend; the
    protocol's TPR@FPR points are marked when the result is an IDRateResult.

    results: {model name: IDRateResult | {'fpr': (K,), 'tpr': (K,), 'auc': float} | (fpr, tpr[, auc])}.
    intervals: {model name: BootstrapResult} (fr_lib.evaluation.bootstrap): a shaded band between its TPR
    bounds at its FPRs (on both axes; compute it at bootstrap.band_fprs() for a band along the curve) and the AUC
    interval in the legend."""
    import matplotlib.pyplot as plt

    if not results:
        raise ValueError("plot_roc needs at least one result")
    intervals = intervals or {}
    unknown = sorted(set(intervals) - set(results))
    if unknown:
        raise ValueError(f"intervals given for models without a result: {unknown}")
    fig, (ax_lin, ax_log) = plt.subplots(1, 2, figsize=figsize)
    for name, result in results.items():
        fpr, tpr, auc, points = _roc_of(result)
        label = name if auc is None else f"{name} (AUC {auc:.4f})"
        band = intervals.get(name)
        if band is not None and auc is not None:
            label = f"{name} (AUC {auc:.4f} [{band.roc_auc_low:.3f}, {band.roc_auc_high:.3f}])"
        line, = ax_lin.plot(fpr, tpr, label=label)
        keep = fpr > 0
        ax_log.plot(fpr[keep], tpr[keep], color=line.get_color(), label=label)
        if points:
            ax_log.scatter(list(points), list(points.values()), color=line.get_color(), s=14, zorder=3)
        if band is not None:
            order = np.argsort(band.fprs)
            for ax in (ax_lin, ax_log):
                ax.fill_between(np.asarray(band.fprs)[order], np.asarray(band.tpr_low)[order],
                                np.asarray(band.tpr_high)[order], color=line.get_color(), alpha=0.2, lw=0)
    ax_lin.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax_log.set_xscale("log")
    for ax, scale in ((ax_lin, "linear"), (ax_log, "log")):
        ax.set_xlabel(f"false positive rate ({scale})")
        ax.set_ylabel("true positive rate")
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3, which="both")
    ax_lin.set_xlim(0, 1)
    ax_log.set_xlim(left=1e-5)
    ax_log.legend(loc="lower right", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _pair_samples(query, labels, distractors, max_pairs: int, rng) -> dict[str, np.ndarray]:
    """Cosine similarities of random pairs: same-identity query pairs (all if <= max_pairs), different-identity
    query pairs, and query x distractor pairs; each at most max_pairs values."""
    from fr_lib.evaluation.metrics.idrate import l2_normalise

    q = l2_normalise(query, "query embeddings")
    labels = np.asarray(labels)
    out = {}
    i, j = np.triu_indices(len(q), 1) if len(q) <= 3000 else (rng.integers(0, len(q), 4 * max_pairs),
                                                                rng.integers(0, len(q), 4 * max_pairs))
    keep = i != j
    i, j = i[keep], j[keep]
    same = labels[i] == labels[j]
    for name, m in (("same identity (query)", same), ("different identity (query)", ~same)):
        ii, jj = i[m], j[m]
        if len(ii) > max_pairs:
            pick = rng.choice(len(ii), max_pairs, replace=False)
            ii, jj = ii[pick], jj[pick]
        out[name] = np.einsum("kd,kd->k", q[ii], q[jj])
    if distractors is not None and len(distractors):
        d = l2_normalise(distractors, "distractor embeddings")
        if len(q) * len(d) <= max_pairs:
            out["query x distractor"] = (q @ d.T).ravel()
        else:
            a, b = rng.integers(0, len(q), max_pairs), rng.integers(0, len(d), max_pairs)
            out["query x distractor"] = np.einsum("kd,kd->k", q[a], d[b])
    return out


def similarity_range(values: list[np.ndarray], pad: float = 0.05, min_width: float = 0.02) -> tuple[float, float]:
    """x range of a similarity panel from its data: [min, max] widened by ``pad`` of the span each side (at least
    ``min_width`` wide). A random-weights model whose cosines all sit near 1.0
    then fills its panel instead of drawing one invisible bar on a fixed [-1, 1] axis."""
    v = np.concatenate([np.asarray(x, float).ravel() for x in values]) if values else np.zeros(0)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return -1.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    width = max(hi - lo, min_width)
    mid = (lo + hi) / 2
    lo, hi = min(lo, mid - width / 2), max(hi, mid + width / 2)
    return lo - pad * width, hi + pad * width


def plot_similarity_distributions(embeddings: dict, max_pairs: int = 50_000, seed: int = 0, figsize=None):
    """Per model (one row each): left, positives (same-identity query pairs) vs negatives (different-identity query
    pairs); right, query-query negatives vs query x distractor pairs. Densities of cosine similarity (seaborn),
    100 bins over each panel's x range, which is chosen from its data (similarity_range).

    embeddings: {model name: (query_emb (Nq, D), query_labels (Nq,), distractor_emb (Nd, D) or None)}."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    if not embeddings:
        raise ValueError("plot_similarity_distributions needs at least one model")
    rng = np.random.default_rng(seed)
    n = len(embeddings)
    fig, axes = plt.subplots(n, 2, figsize=figsize or (12, 3.2 * n), squeeze=False)
    for row, (name, (query, labels, distractors)) in enumerate(embeddings.items()):
        pairs = _pair_samples(query, labels, distractors, max_pairs, rng)
        panels = [("positives vs negatives (query set)", ["same identity (query)", "different identity (query)"]),
                  ("query-query vs query-distractor", ["different identity (query)", "query x distractor"])]
        for ax, (title, keys) in zip(axes[row], panels):
            keys = [k for k in keys if k in pairs and len(pairs[k])]
            df = pd.concat([pd.DataFrame({"cosine similarity": pairs[k], "pairs": k}) for k in keys])
            x_range = similarity_range([pairs[k] for k in keys])
            sns.histplot(df, x="cosine similarity", hue="pairs", stat="density", common_norm=False,
                         element="step", bins=100, binrange=x_range, ax=ax)
            ax.set_title(f"{name}: {title}", fontsize="medium")
            ax.set_xlim(*x_range)
    fig.tight_layout()
    return fig


def plot_training_curves(metrics_csv, title: str | None = None, figsize=(12, 4)):
    """Training curves from a run's metrics.csv (path or DataFrame with an 'epoch' column): losses (columns with
    'loss' in the name) on the left, every other numeric metric (accuracy, TPR@FPR, ...) on the right."""
    import matplotlib.pyplot as plt
    import pandas as pd

    df = metrics_csv if isinstance(metrics_csv, pd.DataFrame) else pd.read_csv(Path(metrics_csv))
    if "epoch" not in df.columns or df.empty:
        raise ValueError(f"training log needs an 'epoch' column and at least one row; columns: {list(df.columns)}")
    numeric = [c for c in df.columns if c != "epoch" and pd.api.types.is_numeric_dtype(df[c])]
    skip = ("seconds", "time", "lr", "step")
    losses = [c for c in numeric if "loss" in c]
    others = [c for c in numeric if c not in losses and not any(s in c for s in skip)]
    fig, (ax_l, ax_r) = plt.subplots(1, 2, figsize=figsize)
    for ax, cols, ylabel in ((ax_l, losses, "loss"), (ax_r, others, "metric")):
        for c in cols:
            ax.plot(df["epoch"], df[c], marker="o", ms=3, label=c)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if cols:
            ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_distributions(panels: dict, figsize=None):
    """Density panels side by side, e.g. a loss's diagnostics (fr_lib.losses.diagnostics). panels: {panel title:
    (x label, {series label: values (n,)}, {marker label: x position} or None)}; markers are dashed vertical
    lines (a margin, a trained scale)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, len(panels), figsize=figsize or (6 * len(panels), 4), squeeze=False)
    for ax, (title, (xlabel, series, markers)) in zip(axes[0], panels.items()):
        for label, values in series.items():
            values = np.asarray(values, float)
            values = values[np.isfinite(values)]
            sns.histplot(values, ax=ax, stat="density", kde=len(np.unique(values)) > 1, element="step",
                         label=f"{label} (n={len(values)})")
        for label, x in (markers or {}).items():
            ax.axvline(x, ls="--", color="k", lw=1)
            ax.annotate(label, (x, 1), xycoords=("data", "axes fraction"), ha="left", va="top", fontsize="small")
        ax.set(title=title, xlabel=xlabel)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
