"""Identity-level bootstrap intervals for the ID-rate table: a percentile interval for each TPR@FPR and ROC-AUC.

    >>> b = bootstrap_identification_rate(query, query_labels, distractors, distractor_labels, n_resamples=200)
    >>> b.tprs, b.tpr_low, b.tpr_high, b.roc_auc, (b.roc_auc_low, b.roc_auc_high)
    >>> b.intervals()          # {'TPR@FPR=0.01': (low, high), ..., 'ROC-AUC': (low, high)}

The estimator. The units sampled are identities, because images of one person are not independent: a table built
on 18 held-out people varies with which 18 people they are. Each resample draws, with replacement and from one
``numpy.random.default_rng(seed)`` stream, first Cq query identities out of the Cq query identities, then Cd
distractor identities out of the Cd (``distractor_labels=None``: every distractor image is its own unit). An
identity drawn c times enters the resampled set as c copies, and the protocol (docs/protocol.md) is applied to
that set with these pair rules:
  - positives: the same-identity pairs within one copy, so identity i's pairs count c_i times;
  - negatives: every pair of images of two different identities i != j (c_i * c_j times: each copy of i with each
    copy of j) and every query x distractor pair (c_i * d_k times);
  - pairs between two copies of the same identity are not pairs of the resampled set (they are neither positive
    nor negative: a duplicated photo with itself would be a cosine 1.0 "positive", and the same person in two
    copies is not a negative).
Then, on the weighted pairs exactly as on the replicated ones, n = total negative weight, N = int(fpr * n),
threshold = the negative at descending rank N, TPR = weight of positives strictly above it / total positive
weight, and ROC-AUC = the weighted Mann-Whitney statistic (ties count 1/2). The interval is the percentile
interval: ``numpy.quantile`` (linear interpolation) at (1 - confidence) / 2 and 1 - (1 - confidence) / 2 of the
resampled values. A resample with no positive or no negative pair (e.g. only one-image identities drawn) is
skipped and counted in ``n_skipped``.

Cost. The similarities are computed once, by the very blocks of ``identification_rate``'s pass (the same
products, so with all weights 1 the thresholds are bit-identical to it), tagged with their identity pair, and
sorted once. The sorted negatives are cut into segments at every positive value and every 256 values, and a
sparse (segments x identity pairs) count matrix is kept. A batch of resamples is then one sparse x dense product
(segment weights for every resample at once: a weight of an identity pair is a product of two draw counts), a
cumulative sum over segments, and per threshold a weighted search inside one segment: no similarity is
recomputed and nothing per negative is touched per resample (benchmarks/bootstrap.py measures it against one
``identification_rate`` call). Memory: ~24 bytes per negative pair (values, identity-pair ids, the count matrix),
so the bootstrap is for held-out sets up to ~10^8 negatives (``max_negatives``), not the 10^9-pair scale
``identification_rate`` handles. Hand-written: no library offers weighted order statistics over identity-pair
blocks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from fr_lib.evaluation.metrics.idrate import (
    _HALF_BINS,
    DEFAULT_FPRS,
    _BlockMaker,
    _tasks,
    _to_device,
    check_embeddings,
    check_fprs,
)


@dataclass
class BootstrapResult:
    """Point estimates (all weights 1: equal to identification_rate) and percentile intervals; arrays like ``fprs``.

    fprs (K,); tprs, thresholds (K,) point estimates (cosine thresholds); roc_auc float;
    tpr_low, tpr_high (K,), roc_auc_low, roc_auc_high: the interval bounds; tpr_samples (R, K) and
    roc_auc_samples (R,) the resampled values (R = n_resamples - n_skipped); confidence in (0, 1); seed;
    n_query_identities, n_distractor_units: the resampled units.
    """

    fprs: np.ndarray
    tprs: np.ndarray
    thresholds: np.ndarray
    roc_auc: float
    tpr_low: np.ndarray
    tpr_high: np.ndarray
    roc_auc_low: float
    roc_auc_high: float
    n_resamples: int
    n_skipped: int
    confidence: float
    seed: int
    n_query_identities: int
    n_distractor_units: int
    tpr_samples: np.ndarray = field(default=None, repr=False)
    roc_auc_samples: np.ndarray = field(default=None, repr=False)

    def as_dict(self) -> dict:
        """Point estimates under the table's column names ('TPR@FPR=<fpr>', 'ROC-AUC')."""
        row = {f"TPR@FPR={f:g}": float(t) for f, t in zip(self.fprs, self.tprs)}
        row["ROC-AUC"] = float(self.roc_auc)
        return row

    def intervals(self) -> dict:
        """{'TPR@FPR=<fpr>': (low, high), ..., 'ROC-AUC': (low, high)}: the columns of IDRateResult.as_dict."""
        out = {f"TPR@FPR={f:g}": (float(lo), float(hi)) for f, lo, hi in zip(self.fprs, self.tpr_low, self.tpr_high)}
        out["ROC-AUC"] = (float(self.roc_auc_low), float(self.roc_auc_high))
        return out

    def to_json(self) -> dict:
        """Plain-JSON summary (results.json): intervals per column, confidence, resamples, skipped, seed."""
        return {"intervals": {k: list(v) for k, v in self.intervals().items()}, "confidence": self.confidence,
                "n_resamples": self.n_resamples, "n_skipped": self.n_skipped, "seed": self.seed,
                "unit": "identity", "n_query_identities": self.n_query_identities,
                "n_distractor_units": self.n_distractor_units, "method": "percentile"}


class IdentityPairs:
    """All pair similarities of a query / distractor set, grouped by identity pair, sorted once.

    Built from identification_rate's own similarity blocks. ``evaluate(query_counts, distractor_counts)`` gives the
    protocol's thresholds, TPRs and ROC-AUC when identity i counts query_counts[i] times and distractor unit k
    distractor_counts[k] times (the module docstring's pair rules); all ones = the plain protocol.
    """

    def __init__(self, query_emb, query_labels, distractor_emb=None, distractor_labels=None,
                 chunk_size: int | None = 1 << 20, max_negatives: int = 10 ** 8):
        q, labels, d = check_embeddings(query_emb, query_labels, distractor_emb)
        nq, nd = q.shape[0], d.shape[0]
        if distractor_labels is None:
            d_units = np.arange(nd)
        else:
            d_units = np.asarray(distractor_labels)
            if d_units.shape != (nd,):
                raise ValueError(f"distractor_labels shape {d_units.shape} does not match {nd} distractor embeddings")
        _, labels, counts = np.unique(labels, return_inverse=True, return_counts=True)   # labels -> 0..C-1
        _, d_units = np.unique(d_units, return_inverse=True)
        self.n_query_identities, self.n_distractor_units = len(counts), int(d_units.max(initial=-1)) + 1
        cq = self.n_query_identities
        n_pos = int((counts * (counts - 1) // 2).sum())
        n_neg = int(nq * (nq - 1) // 2 - n_pos + nq * nd)
        if n_pos == 0:
            raise ValueError("no positive pairs: every query identity has a single image")
        if n_neg == 0:
            raise ValueError("no negative pairs: a single query identity and no distractors")
        if n_neg > max_negatives:
            raise ValueError(f"{n_neg} negative pairs exceed max_negatives={max_negatives}: the bootstrap keeps "
                             f"every negative similarity (~24 bytes each); subsample the distractors or raise "
                             f"max_negatives")

        # negatives, from the blocks identification_rate's pass computes (same tasks, same products: bit-identical)
        vals, ids = np.empty(n_neg, np.float32), np.empty(n_neg, np.int64)
        make = _BlockMaker(q * float(_HALF_BINS), q, d, _to_device(labels, "cpu"), "cpu", negatives_only=False)
        pos_ = 0
        for task in _tasks(nq, nd, chunk_size):
            s = make(task)
            if task[0] == "qq":
                _, r0, r1 = task
                li, lj = labels[r0:r1, None], labels[None, r0:]
                keep = (np.arange(r0, nq)[None, :] > np.arange(r0, r1)[:, None]) & (li != lj)
                v, b = s[keep], (li * cq + lj)[keep]
            else:
                _, c0, c1, r0, r1 = task
                v = s.reshape(-1)
                b = (cq * cq + labels[r0:r1, None] * self.n_distractor_units + d_units[None, c0:c1]).reshape(-1)
            vals[pos_:pos_ + v.size] = v
            ids[pos_:pos_ + v.size] = b
            pos_ += v.size
        assert pos_ == n_neg
        vals *= np.float32(1.0 / _HALF_BINS)       # exact: back to cosine, as identification_rate does
        order = np.argsort(vals)                   # ascending; the order inside ties does not matter
        self.neg_asc, self.neg_ids_asc = vals[order], ids[order].astype(np.int32)
        del vals, ids, order
        self.n_neg = n_neg
        self.n_blocks = cq * cq + cq * self.n_distractor_units

        # positives: the same per-identity Gram products as identification_rate's _positive_scores
        from threadpoolctl import threadpool_limits

        sort_l = np.argsort(labels, kind="stable")
        _, starts, cnts = np.unique(labels[sort_l], return_index=True, return_counts=True)
        pv, pid = [], []
        with threadpool_limits(limits=1, user_api="blas"):
            for u, (s0, c) in enumerate(zip(starts, cnts)):
                if c > 1:
                    g = q[sort_l[s0:s0 + c]]
                    pv.append((g @ g.T)[np.triu_indices(c, 1)])
                    pid.append(np.full(c * (c - 1) // 2, u, np.int64))
        pv = np.concatenate(pv).astype(np.float32)
        porder = np.argsort(pv, kind="stable")
        self.pos_asc, self.pos_ids_asc = pv[porder], np.concatenate(pid)[porder]

        # Segments of the ascending negatives: cut at every positive value (its ties form their own segment) and
        # every SEGMENT values. The Mann-Whitney count of a positive is then a sum of whole segments, and a
        # threshold lies in one segment, where per-negative weights are needed for ~SEGMENT values only.
        below = np.searchsorted(self.neg_asc, self.pos_asc, side="left")
        at_most = np.searchsorted(self.neg_asc, self.pos_asc, side="right")
        self.edges = np.unique(np.concatenate([[0, n_neg], below, at_most, np.arange(0, n_neg, self.SEGMENT)]))
        self._seg_below = np.searchsorted(self.edges, below)       # segment edge index of each positive's cuts
        self._seg_at_most = np.searchsorted(self.edges, at_most)
        from scipy.sparse import csr_matrix

        seg = np.repeat(np.arange(len(self.edges) - 1), np.diff(self.edges))
        # (segments x identity pairs) counts of negatives: segment weights = counts @ pair weights, for a whole
        # batch of resamples in one sparse x dense product
        self.counts = csr_matrix((np.ones(n_neg, np.float64), (seg, self.neg_ids_asc)),
                                 shape=(len(self.edges) - 1, self.n_blocks))
        self.counts.sum_duplicates()

    SEGMENT = 256

    def _pair_weights(self, query_counts: np.ndarray, distractor_counts: np.ndarray) -> np.ndarray:
        """(R, Cq), (R, Cd) counts -> (R, n_blocks) weights of the identity-pair blocks (qq i*Cq+j, then qd)."""
        c, dc = query_counts.astype(np.float64), distractor_counts.astype(np.float64)
        qq = (c[:, :, None] * c[:, None, :]).reshape(len(c), -1)
        qd = (c[:, :, None] * dc[:, None, :]).reshape(len(c), -1)
        return np.concatenate([qq, qd], axis=1)

    def evaluate_many(self, query_counts, distractor_counts, fprs: Sequence[float] = DEFAULT_FPRS) -> list:
        """[(thresholds (K,) float32 cosine, tprs (K,), roc_auc) or None] for R resamples: integer counts per query
        identity (R, Cq) and per distractor unit (R, Cd); None where the weighted set has no positive or no
        negative pair."""
        fprs = check_fprs(fprs)
        query_counts = np.atleast_2d(np.asarray(query_counts, np.int64))
        distractor_counts = np.asarray(distractor_counts, np.int64).reshape(len(query_counts), -1)
        if query_counts.shape[1] != self.n_query_identities or \
                distractor_counts.shape[1] != self.n_distractor_units:
            raise ValueError(f"counts must have shapes (R, {self.n_query_identities}) and "
                             f"(R, {self.n_distractor_units}), got {query_counts.shape} and {distractor_counts.shape}")
        out = []
        batch = max(1, (1 << 24) // max(self.n_blocks, 1))        # <= 16M pair weights (128 MB) at a time
        for b0 in range(0, len(query_counts), batch):
            cq, cd = query_counts[b0:b0 + batch], distractor_counts[b0:b0 + batch]
            weights = self._pair_weights(cq, cd)                    # (r, n_blocks)
            seg_w = np.asarray(self.counts @ weights.T)             # (n_segments, r), exact integers in float64
            for r in range(len(cq)):
                out.append(self._one(fprs, cq[r], weights[r], seg_w[:, r]))
        return out

    def _one(self, fprs, query_counts, weights, seg_w):
        cum = np.concatenate([[0.0], np.cumsum(seg_w)])            # weight of negatives below each edge
        n_neg = int(round(cum[-1]))
        w_pos = query_counts[self.pos_ids_asc]
        cum_pos = np.concatenate([[0], np.cumsum(w_pos)])
        n_pos = int(cum_pos[-1])
        if n_neg == 0 or n_pos == 0:
            return None
        thresholds = np.empty(len(fprs), np.float32)
        for k, f in enumerate(fprs):
            rank = min(int(f * n_neg), n_neg - 1)                 # N = int(fpr * n), descending
            m = n_neg - 1 - rank                                    # the same element, counted from the bottom
            g = int(np.searchsorted(cum, m, side="right")) - 1      # segment holding it
            e0, e1 = self.edges[g], self.edges[g + 1]
            inside = np.cumsum(weights[self.neg_ids_asc[e0:e1]])
            thresholds[k] = self.neg_asc[e0 + int(np.searchsorted(inside, m - cum[g], side="right"))]
        above = n_pos - cum_pos[np.searchsorted(self.pos_asc, thresholds, side="right")]
        tprs = above / n_pos
        less, at_most = cum[self._seg_below], cum[self._seg_at_most]
        auc = float(np.dot(w_pos, less + 0.5 * (at_most - less))) / (float(n_pos) * float(n_neg))
        return thresholds, tprs, auc

    def evaluate(self, query_counts, distractor_counts, fprs: Sequence[float] = DEFAULT_FPRS):
        """One resample: counts per query identity (Cq,) and per distractor unit (Cd,) -> (thresholds (K,),
        tprs (K,), roc_auc), or None when the weighted set has no positive or no negative pair."""
        query_counts = np.asarray(query_counts)
        if query_counts.ndim != 1 or np.asarray(distractor_counts).ndim != 1:
            raise ValueError("counts must have shapes (Cq,) and (Cd,); evaluate_many takes (R, Cq) and (R, Cd)")
        return self.evaluate_many(query_counts[None], np.asarray(distractor_counts)[None], fprs)[0]


def band_fprs(fprs: Sequence[float] = DEFAULT_FPRS, low: float = 1e-3, n: int = 25) -> np.ndarray:
    """``fprs`` plus a log-spaced grid from ``low`` to 1 (n points), ascending: bootstrap at these for ROC bands
    (plots.plot_roc). Grid points within 5% of one of ``fprs`` are dropped, so the table's columns keep their
    FPR values (and names)."""
    fprs = check_fprs(fprs)
    grid = [g for g in np.geomspace(low, 1.0, n) if np.all(np.abs(np.log(g / fprs)) > 0.05)]
    return np.unique(np.concatenate([fprs, grid]))


def bootstrap_intervals(results: dict, embeddings: dict, n_resamples: int = 200, seed: int = 0,
                        confidence: float = 0.95, max_negatives: int = 10 ** 8) -> tuple[dict, dict]:
    """Bootstrap every row of a held-out table: ({row: BootstrapResult}, {row: reason it has none}).

    results: {row: IDRateResult} (their fprs, plus band_fprs' grid for the ROC bands); embeddings: {row: an object
    with query, query_labels, distractors, distractor_labels (fr_lib.evaluation.held_out.HeldOutEmbeddings) or a
    (query, query_labels, distractors[, distractor_labels]) tuple}. A row too large for the bootstrap
    (max_negatives) or without a usable resample gets its reason instead of an interval."""
    out, reasons = {}, {}
    for name, r in results.items():
        e = embeddings[name]
        q, ql, d, dl = ((e.query, e.query_labels, e.distractors, e.distractor_labels) if hasattr(e, "query")
                        else (tuple(e) + (None,))[:4])
        try:
            out[name] = bootstrap_identification_rate(q, ql, d, dl, band_fprs(r.fprs), n_resamples, confidence,
                                                      seed, max_negatives=max_negatives)
        except ValueError as err:
            reasons[name] = f"no bootstrap interval: {err}"
    return out, reasons


def draw_counts(rng: np.random.Generator, n_units: int) -> np.ndarray:
    """How often each of n_units is drawn when n_units are drawn with replacement: (n_units,) int64."""
    if n_units == 0:
        return np.zeros(0, np.int64)
    return np.bincount(rng.integers(0, n_units, n_units), minlength=n_units).astype(np.int64)


def bootstrap_identification_rate(
    query_emb: np.ndarray,
    query_labels: np.ndarray,
    distractor_emb: np.ndarray | None,
    distractor_labels: np.ndarray | None = None,
    fprs: Sequence[float] = DEFAULT_FPRS,
    n_resamples: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    chunk_size: int | None = 1 << 20,
    max_negatives: int = 10 ** 8,
) -> BootstrapResult:
    """Identity-level bootstrap of identification_rate (the estimator: module docstring).

    query_emb (Nq, D), query_labels (Nq,), distractor_emb (Nd, D) or None, distractor_labels (Nd,) identities of
    the distractors (None: each distractor image is a unit). n_resamples >= 1; confidence in (0, 1); seed fixes
    the draws; chunk_size as identification_rate's (the same blocks). Raises ValueError on ill-formed input, as
    identification_rate does, and when every resample is degenerate.
    """
    fprs = check_fprs(fprs)
    if not (isinstance(n_resamples, (int, np.integer)) and n_resamples >= 1):
        raise ValueError(f"n_resamples must be a whole number >= 1, got {n_resamples!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), e.g. 0.95; got {confidence!r}")
    pairs = IdentityPairs(query_emb, query_labels, distractor_emb, distractor_labels, chunk_size, max_negatives)
    cq, cd = pairs.n_query_identities, pairs.n_distractor_units
    thresholds, tprs, auc = pairs.evaluate(np.ones(cq, np.int64), np.ones(cd, np.int64), fprs)
    rng = np.random.default_rng(seed)
    draws = [(draw_counts(rng, cq), draw_counts(rng, cd)) for _ in range(n_resamples)]
    outs = pairs.evaluate_many(np.array([a for a, _ in draws]), np.array([b for _, b in draws]).reshape(
        n_resamples, cd), fprs)
    tpr_s = [o[1] for o in outs if o is not None]
    auc_s = [o[2] for o in outs if o is not None]
    skipped = n_resamples - len(tpr_s)
    if not tpr_s:
        raise ValueError(f"all {n_resamples} resamples had no positive or no negative pair: too few query "
                         f"identities with two or more images ({cq} query identities)")
    tpr_s, auc_s = np.array(tpr_s), np.array(auc_s)
    a = (1.0 - confidence) / 2.0
    return BootstrapResult(
        fprs=fprs, tprs=tprs, thresholds=thresholds, roc_auc=auc,
        tpr_low=np.quantile(tpr_s, a, axis=0), tpr_high=np.quantile(tpr_s, 1.0 - a, axis=0),
        roc_auc_low=float(np.quantile(auc_s, a)), roc_auc_high=float(np.quantile(auc_s, 1.0 - a)),
        n_resamples=int(n_resamples), n_skipped=skipped, confidence=float(confidence), seed=int(seed),
        n_query_identities=cq, n_distractor_units=cd, tpr_samples=tpr_s, roc_auc_samples=auc_s)
