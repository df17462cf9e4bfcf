"""Verification metrics on given pair scores (cosine similarity; higher = more likely the same identity).

pos_scores (P,) similarities of same-identity pairs, neg_scores (M,) of different-identity pairs.
ROC/AUC use scikit-learn; EER, best accuracy and the LFW 10-fold protocol are the seeds' and facenet's definitions.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from fr_lib.evaluation.metrics.idrate import check_fprs


def _scores(pos_scores, neg_scores) -> tuple[np.ndarray, np.ndarray]:
    pos = np.asarray(pos_scores, dtype=np.float64).ravel()
    neg = np.asarray(neg_scores, dtype=np.float64).ravel()
    if pos.size == 0:
        raise ValueError("no positive (same-identity) scores")
    if neg.size == 0:
        raise ValueError("no negative (different-identity) scores")
    for name, a in (("positive", pos), ("negative", neg)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} scores contain NaN or inf")
    return pos, neg


def tpr_at_fpr(pos_scores, neg_scores, fprs: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The ID-rate rule on given scores: threshold = negatives sorted descending [int(fpr * M)] (clamped to M - 1),
    TPR = mean(pos > threshold). Returns (tprs (K,), thresholds (K,)). Selection by np.partition, O(M) per FPR."""
    fprs = check_fprs(fprs)
    pos, neg = _scores(pos_scores, neg_scores)
    m = len(neg)
    ranks = np.array([min(int(f * m), m - 1) for f in fprs])
    # k-th largest = (m - 1 - k)-th smallest
    thresholds = np.partition(neg, m - 1 - ranks)[m - 1 - ranks]
    tprs = (len(pos) - np.searchsorted(np.sort(pos), thresholds, side="right")) / len(pos)
    return tprs, thresholds


def roc_curve_points(pos_scores, neg_scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of sklearn.metrics.roc_curve (decision: score >= threshold)."""
    from sklearn.metrics import roc_curve
    pos, neg = _scores(pos_scores, neg_scores)
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return roc_curve(y, np.r_[pos, neg])


def roc_auc(pos_scores, neg_scores) -> float:
    """Area under the ROC curve = P(pos > neg) + P(pos == neg) / 2 (sklearn.metrics.roc_auc_score)."""
    from sklearn.metrics import roc_auc_score
    pos, neg = _scores(pos_scores, neg_scores)
    return float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]))


def eer(pos_scores, neg_scores) -> tuple[float, float]:
    """Equal error rate and its threshold: the point where FPR = FNR (= 1 - TPR), linearly interpolated between
    the two ROC points that bracket the crossing. Returns (eer in [0, 1], threshold as a cosine similarity)."""
    fpr, tpr, thr = roc_curve_points(pos_scores, neg_scores)
    thr = thr.copy()
    thr[0] = thr[1] if len(thr) > 1 else thr[0]           # sklearn's first threshold is +inf
    diff = (1 - tpr) - fpr                                # decreasing from 1 to -1
    i = int(np.argmax(diff <= 0))
    if i == 0:
        return float(fpr[0]), float(thr[0])
    t = diff[i - 1] / (diff[i - 1] - diff[i])
    rate = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    return float(rate), float(thr[i - 1] + t * (thr[i] - thr[i - 1]))


def best_accuracy(pos_scores, neg_scores) -> tuple[float, float]:
    """Best verification accuracy over all thresholds and that threshold (decision: score >= threshold).
    accuracy = (#pos >= t + #neg < t) / (P + M). Returns (accuracy, threshold)."""
    pos, neg = _scores(pos_scores, neg_scores)
    fpr, tpr, thr = roc_curve_points(pos, neg)
    acc = (tpr * len(pos) + (1 - fpr) * len(neg)) / (len(pos) + len(neg))
    i = int(np.argmax(acc))
    threshold = thr[i] if np.isfinite(thr[i]) else np.nextafter(max(pos.max(), neg.max()), np.inf)
    return float(acc[i]), float(threshold)


@dataclass
class LFWResult:
    """mean/std accuracy over folds; fold_accuracies (K,), fold_thresholds (K,) chosen on the other folds."""
    mean: float
    std: float
    fold_accuracies: np.ndarray
    fold_thresholds: np.ndarray


def lfw_10fold_accuracy(scores, issame, folds=None, n_folds: int = 10) -> LFWResult:
    """LFW View-2 protocol: for each fold, the best-accuracy threshold on the other folds is applied to it.

    scores (n_pairs,) cosine similarities, issame (n_pairs,) bool; folds (n_pairs,) fold index per pair
    (default: n_folds contiguous equal folds in pair order, as pairs.txt lists them)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    issame = np.asarray(issame, dtype=bool).ravel()
    if scores.shape != issame.shape:
        raise ValueError(f"scores {scores.shape} and issame {issame.shape} differ in length")
    if folds is None:
        if len(scores) % n_folds:
            raise ValueError(f"{len(scores)} pairs do not split into {n_folds} equal folds; pass folds=")
        folds = np.repeat(np.arange(n_folds), len(scores) // n_folds)
    folds = np.asarray(folds)
    accs, thrs = [], []
    for k in np.unique(folds):
        train, test = folds != k, folds == k
        _, t = best_accuracy(scores[train & issame], scores[train & ~issame])
        thrs.append(t)
        accs.append(float(((scores[test] >= t) == issame[test]).mean()))
    accs = np.array(accs)
    return LFWResult(float(accs.mean()), float(accs.std()), accs, np.array(thrs))


@dataclass
class LFWPair:
    path1: str
    path2: str
    issame: bool
    fold: int


def read_lfw_pairs(pairs_txt: str | Path, ext: str = "jpg") -> list[LFWPair]:
    """Parse an LFW pairs.txt (View 2: first line "10 300", then per fold 300 matched lines "name n1 n2" and 300
    mismatched "name1 n1 name2 n2"; pairsDevTrain/Test: first line "N", one fold). Paths are relative to the LFW
    root: name/name_%04d.<ext>. Raises ValueError naming the file and line on a malformed line or wrong count."""
    path = Path(pairs_txt)
    lines = [ln.split() for ln in path.read_text().splitlines()]
    if not lines or not lines[0] or not all(x.isdigit() for x in lines[0]) or len(lines[0]) > 2:
        raise ValueError(f"{path}: first line must be 'n_folds n_pairs' or 'n_pairs', got {lines[:1]}")
    n_folds, per = (int(lines[0][0]), int(lines[0][1])) if len(lines[0]) == 2 else (1, int(lines[0][0]))
    body = [(i + 2, ln) for i, ln in enumerate(lines[1:]) if ln]
    if len(body) != 2 * n_folds * per:
        raise ValueError(f"{path}: expected {2 * n_folds * per} pair lines ({n_folds} folds x 2 x {per}), "
                         f"found {len(body)}")

    def img(name, n):
        return f"{name}/{name}_{int(n):04d}.{ext}"

    pairs = []
    for k, (lineno, f) in enumerate(body):
        try:
            if len(f) == 3:
                pairs.append(LFWPair(img(f[0], f[1]), img(f[0], f[2]), True, k // (2 * per)))
            elif len(f) == 4:
                pairs.append(LFWPair(img(f[0], f[1]), img(f[2], f[3]), False, k // (2 * per)))
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"{path}:{lineno}: expected 'name n1 n2' or 'name1 n1 name2 n2', got {' '.join(f)!r}")
    return pairs
