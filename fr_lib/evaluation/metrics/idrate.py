"""Open-set identification rate (TPR at FPR) with an exact, chunked order statistic over all negative pairs.

Protocol (docs/protocol.md, the seed table's metric), cosine similarity s:
  positives: every unordered pair (i < j) of query images of the same identity;
  negatives: every unordered pair of query images of different identities plus every (query, distractor) pair;
  N = int(fpr * number_of_negatives), threshold = negatives sorted descending [N];
  TPR = #(positives with s > threshold) / number_of_positives   (strict >).

Scale. 10^4 queries x 10^5 distractors are 10^9 negatives (4 GB as float32): the similarity matrix is never
materialised. Hand-written because no library selects exact order statistics out of core:
  1. estimate each threshold from a uniform random sample of negative pairs (``sample_size`` dot products);
  2. ONE chunked pass over all similarities: a fine uniform histogram of every negative (65 536 bins over [-1, 1],
     bin width ~3e-5 cosine) and a copy of the values that fall in the bins of a window around each estimate;
  3. for each FPR the histogram gives the bin holding rank N exactly and how many negatives lie above it; the
     copied values of that bin give the exact value. Only when a threshold falls outside its window (a bad sample)
     is a second pass run, copying just that bin.
The result is the exact order statistic, identical to materialise-and-sort on the same similarity values.
Selection inside the target bin uses np.partition (torch.sort / kthvalue are 10-15x slower on CPU, docs/pitfalls.md).
Per block of similarities the extra CPU work is a few memory sweeps (bin index, bincount, table lookup, copy) into
preallocated buffers, ~1/3 of the block's matrix product; on CPU the blocks are spread over one thread per core,
each with single-threaded BLAS, so both cores stay busy through the sweeps. benchmarks/id_rate.py measures it.

ROC-AUC (Mann-Whitney U with ties counted 1/2, equal to sklearn.metrics.roc_auc_score) is computed from the same
histogram: a negative in a lower (higher) bin than a positive counts 1 (0). Negatives sharing a bin with a positive
are resolved exactly from copied values whenever those bins fit the ``max_collect`` budget (true up to ~10^7-10^8
negatives, depending on the overlap); otherwise they count 1/2 and ``roc_auc_max_error`` (returned) bounds the
error: at most half the fraction of pairs that share a 3e-5-wide bin (~3e-5 at 10^9 negatives in the benchmark).

Similarities are float32 matrix products (TF32 must stay off on CUDA for exact float32 values). Positive scores come
from per-identity products, so they may differ from the same pair's entry in a full product by float32 rounding.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

DEFAULT_FPRS = (0.5, 0.25, 0.1, 0.05, 0.01, 0.005, 0.001)
_HALF_BINS = 1 << 15           # histogram bins per unit cosine / 2: 65 536 bins over [-1, 1]
_OFFSET = 16                   # guard bins either side (cosines of float32 unit vectors exceed 1 by ~1e-7)
_NUM_BINS = 2 * _HALF_BINS + 2 * _OFFSET


@dataclass
class IDRateResult:
    """Identification rates. Arrays are indexed like ``fprs``.

    fprs (K,), thresholds (K,) cosine similarity, tprs (K,) in [0, 1], ranks (K,) the N of each FPR;
    n_positives / n_negatives: pair counts; roc_auc in [0, 1] and roc_auc_max_error (0.0 when exact);
    positive_scores (n_positives,) float32 cosine; negative_sample (S,) float32, a uniform sample of negatives;
    negative_histogram (_NUM_BINS,) int64 counts of all negatives over ``bin_edges`` (_NUM_BINS + 1,).
    """

    fprs: np.ndarray
    thresholds: np.ndarray
    tprs: np.ndarray
    ranks: np.ndarray
    n_positives: int
    n_negatives: int
    roc_auc: float
    roc_auc_max_error: float = 0.0
    positive_scores: np.ndarray = field(default=None, repr=False)
    negative_sample: np.ndarray = field(default=None, repr=False)
    negative_histogram: np.ndarray = field(default=None, repr=False)
    n_passes: int = 1

    @property
    def bin_edges(self) -> np.ndarray:
        return (np.arange(_NUM_BINS + 1, dtype=np.float64) - (_HALF_BINS + _OFFSET)) / _HALF_BINS

    def roc_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(fpr, tpr) at every histogram edge (cosine resolution ~3e-5), descending thresholds."""
        edges = self.bin_edges
        neg_above = np.concatenate([[0], np.cumsum(self.negative_histogram[::-1])])  # at edges[::-1]
        pos = np.sort(self.positive_scores)
        pos_above = len(pos) - np.searchsorted(pos, edges[::-1], side="left")
        return neg_above / self.n_negatives, pos_above / self.n_positives

    def as_dict(self) -> dict:
        row = {f"TPR@FPR={f:g}": float(t) for f, t in zip(self.fprs, self.tprs)}
        row["ROC-AUC"] = float(self.roc_auc)
        return row


def l2_normalise(x: np.ndarray, name: str = "embeddings") -> np.ndarray:
    """(N, D) -> (N, D) float32 rows of unit L2 norm; raises ValueError on NaN/inf or zero rows."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {x.shape}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x).all(axis=1)).sum())
        raise ValueError(f"{name} contain NaN or inf values in {bad} row(s)")
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    if (norm == 0).any():
        raise ValueError(f"{name} contain {int((norm == 0).sum())} all-zero row(s); cosine similarity undefined")
    return np.ascontiguousarray(x / norm)


def check_fprs(fprs: Sequence[float]) -> np.ndarray:
    fprs = np.atleast_1d(np.asarray(fprs, dtype=np.float64))
    if fprs.size == 0:
        raise ValueError("fprs is empty")
    bad = fprs[~((fprs > 0) & (fprs <= 1))]
    if bad.size:
        raise ValueError(f"FPR values must lie in (0, 1]; got {bad.tolist()}")
    return fprs


def _bins(v: np.ndarray) -> np.ndarray:
    """Monotone map cosine -> histogram bin: trunc(v * 2^15 + 2^15 + 16)."""
    return _bins_scaled(v * np.float32(_HALF_BINS))


def _bins_scaled(x, out_f=None, out_i=None):
    """The same map on x = v * 2^15 (numpy or torch; optional numpy buffers). Blocks are computed from query rows
    pre-multiplied by 2^15: scaling by a power of two is exact in floating point, so x is exactly 2^15 times the
    cosine, _bins(v) == _bins_scaled(2^15 v), and one sweep per block is saved."""
    if isinstance(x, np.ndarray):
        t = np.add(x, np.float32(_HALF_BINS + _OFFSET), out=out_f)
        if out_i is None:
            return t.astype(np.intp)
        np.copyto(out_i, t, casting="unsafe")
        return out_i
    import torch
    return (x + (_HALF_BINS + _OFFSET)).to(dtype=torch.int64).clamp_(0, _NUM_BINS - 1)


class _Pass:
    """One pass over negative similarity blocks: histogram of all values + copies of values in selected bins.

    Per block of n values the CPU work is ~5 memory sweeps into preallocated buffers (bin index, bincount, table
    lookup, compress), about 1/3 of the matrix product that made the block (benchmarks/id_rate.py).
    """

    def __init__(self, collect_bins: np.ndarray, histogram: bool, device: str):
        self.device = device
        self.histogram = histogram
        self.table = np.zeros(_NUM_BINS, dtype=bool)
        self.table[collect_bins] = True
        self.hist = np.zeros(_NUM_BINS, dtype=np.int64)
        self.collected: list[np.ndarray] = []
        self.n_collected = 0
        self._buf_size = 0
        if device != "cpu":
            import torch
            self.table_t = torch.from_numpy(self.table).to(device)
            self.hist_t = torch.zeros(_NUM_BINS, dtype=torch.int64, device=device)

    def drop_bins(self, bins: np.ndarray) -> None:
        """Stop copying values of ``bins`` and forget those already copied."""
        self.table[bins] = False
        if self.device != "cpu":
            self.table_t[_to_device(bins, self.device)] = False
        vals = np.concatenate(self.collected) if self.collected else np.zeros(0, np.float32)
        self.collected = [vals[self.table[_bins(vals)]]]
        self.n_collected = len(self.collected[0])

    def add(self, x) -> None:
        """x: 1-D or 2-D block of negative cosine similarities times 2^15 (numpy on CPU, torch on CUDA)."""
        x = x.reshape(-1)
        n = x.shape[0]
        if n == 0:
            return
        if isinstance(x, np.ndarray):
            if n > self._buf_size:
                self._buf_size = n
                self._f, self._i, self._m = np.empty(n, np.float32), np.empty(n, np.intp), np.empty(n, bool)
            idx = _bins_scaled(x, self._f[:n], self._i[:n])
            if self.histogram:
                try:
                    h = np.bincount(idx, minlength=_NUM_BINS)
                except ValueError:   # negative bin
                    h = None
                if h is None or len(h) != _NUM_BINS:
                    raise ValueError("cosine similarity outside [-1, 1]: embeddings were not normalised")
                self.hist += h
            sel = x[np.take(self.table, idx, out=self._m[:n])]
        else:
            idx = _bins_scaled(x)
            if self.histogram:
                import torch
                self.hist_t += torch.bincount(idx, minlength=_NUM_BINS)
            sel = x[self.table_t[idx]].cpu().numpy()
        if sel.size:
            sel = sel * np.float32(1.0 / _HALF_BINS)   # exact: back to cosine
            self.collected.append(sel)
            self.n_collected += sel.size

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        if self.device != "cpu" and self.histogram:
            self.hist = self.hist_t.cpu().numpy()
        vals = np.concatenate(self.collected) if self.collected else np.zeros(0, np.float32)
        self.collected = []
        return self.hist, vals


def _to_device(x: np.ndarray, device: str):
    if device == "cpu":
        return x
    import torch
    return torch.from_numpy(np.ascontiguousarray(x)).to(device)


def _tasks(nq: int, nd: int, chunk_size: int | None) -> list[tuple]:
    """Work items of the similarity product, each a block of <= chunk_size values: ('qq', r0, r1) rows of the upper
    query-query triangle (columns r0..nq) and ('qd', c0, c1, r0, r1) query x distractor tiles (<= 4096 columns)."""
    total = max(nq * nq, nq * nd) if chunk_size is None else chunk_size
    rows = max(1, min(nq, total // max(nq, 1)))
    tasks: list[tuple] = [("qq", r0, min(nq, r0 + rows)) for r0 in range(0, nq, rows)]
    if nd:
        cols = nd if chunk_size is None else min(nd, max(1, min(4096, total)))
        rows = max(1, min(nq, total // cols))
        tasks += [("qd", c0, min(nd, c0 + cols), r0, min(nq, r0 + rows))
                  for c0 in range(0, nd, cols) for r0 in range(0, nq, rows)]
    return tasks


class _BlockMaker:
    """Computes the blocks of tasks: 2^15 x cosine (query rows pre-scaled; exact, see _bins_scaled). One output
    buffer per maker on CPU, so a block must be consumed before the next is made; one maker per thread."""

    def __init__(self, q_scaled, q, d, labels_dev, device: str, negatives_only: bool = True):
        self.q_scaled, self.q, self.d, self.labels = q_scaled, q, d, labels_dev
        self.device, self.negatives_only = device, negatives_only
        self.cpu = isinstance(q, np.ndarray)
        self.buf = np.empty(0, np.float32)
        self._tile = (None, None)

    def _product(self, a, b_t):
        if not self.cpu:
            return a @ b_t
        n = a.shape[0] * b_t.shape[1]
        if n > self.buf.size:
            self.buf = np.empty(n, np.float32)
        return np.matmul(a, b_t, out=self.buf[:n].reshape(a.shape[0], b_t.shape[1]))

    def __call__(self, task):
        if task[0] == "qq":
            _, r0, r1 = task
            s = self._product(self.q_scaled[r0:r1], self.q[r0:].T)          # (r, nq - r0)
            if not self.negatives_only:
                return s
            nq = self.q.shape[0]
            upper = _to_device(np.arange(r0, nq)[None, :] > np.arange(r0, r1)[:, None], self.device)
            return s[upper & (self.labels[r0:r1, None] != self.labels[None, r0:])]
        _, c0, c1, r0, r1 = task
        if self._tile[0] != (c0, c1):   # transposed distractor tile, reused by the row blocks that follow
            dt = self.d[c0:c1].T
            self._tile = ((c0, c1), np.ascontiguousarray(dt) if self.cpu else dt.contiguous())
        return self._product(self.q_scaled[r0:r1], self._tile[1])


def _similarity_blocks(q, labels, d, chunk_size, device, negatives_only=True):
    """Yield, in one thread, the blocks of every task (see _tasks, _BlockMaker). q (Nq, D), d (Nd, D) unit rows on
    ``device``; labels (Nq,) int numpy. negatives_only=False yields raw products (the benchmark's baseline)."""
    make = _BlockMaker(q * float(_HALF_BINS), q, d, _to_device(labels, device), device, negatives_only)
    for task in _tasks(q.shape[0], d.shape[0], chunk_size):
        yield make(task)


def _run_pass(q, labels, d, chunk_size, device, collect_bins, histogram, threads, max_collect, drop_bins=None,
              progress=False, negatives_only=True):
    """One pass over all blocks -> (histogram, copied values, whether drop_bins were dropped).

    On CPU, ``threads`` workers each run single-threaded BLAS products and their own histogram/copy work on
    alternate blocks: both cores stay busy through the (single-threaded) numpy sweeps, where two-threaded BLAS
    followed by one-threaded sweeps leaves a core idle for a third of the time. CUDA: one stream, in order."""
    import threading

    tasks = _tasks(q.shape[0], d.shape[0], chunk_size)
    bar = None
    if progress:
        from fr_lib.progress import progress_bar
        bar = progress_bar(total=len(tasks), desc="ID rate", unit="block", leave=False)
    q_scaled = q * float(_HALF_BINS)
    labels_dev = _to_device(labels, device)
    local, passes = threading.local(), []
    budget = max_collect // max(threads, 1)

    def work(task):
        st = getattr(local, "state", None)
        if st is None:
            st = local.state = (_Pass(collect_bins, histogram, device),
                                _BlockMaker(q_scaled, q, d, labels_dev, device, negatives_only))
            passes.append(st[0])
        block = st[1](task)
        if negatives_only:
            st[0].add(block)
            if drop_bins is not None and drop_bins.size and st[0].n_collected > budget and st[0].table[drop_bins[0]]:
                st[0].drop_bins(drop_bins)
        if bar is not None:
            bar.update()

    if device == "cpu" and threads > 1:
        from concurrent.futures import ThreadPoolExecutor

        from threadpoolctl import threadpool_limits
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(threads) as ex:
            for _ in ex.map(work, tasks):
                pass
    else:
        for task in tasks:
            work(task)
    if bar is not None:
        bar.close()
    if not passes:
        return np.zeros(_NUM_BINS, np.int64), np.zeros(0, np.float32), False
    results = [p.finish() for p in passes]
    hist = np.sum([h for h, _ in results], axis=0)
    vals = np.concatenate([v for _, v in results])
    dropped = drop_bins is not None and drop_bins.size > 0 and any(not p.table[drop_bins[0]] for p in passes)
    if dropped:   # a worker ran over its share: drop those bins everywhere for a consistent copy
        table = np.ones(_NUM_BINS, bool)
        table[drop_bins] = False
        vals = vals[table[_bins(vals)]]
    return hist, vals, dropped


def _positive_scores(q: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Sorted cosine similarities (n_positives,) float32 of same-identity query pairs i < j (per-identity Gram)."""
    order = np.argsort(labels, kind="stable")
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    out = []
    for s0, c in zip(starts, counts):
        if c > 1:
            g = q[order[s0:s0 + c]]
            out.append((g @ g.T)[np.triu_indices(c, 1)])
    return np.sort(np.concatenate(out).astype(np.float32))


def _sample_negatives(q, labels, d, n_qq_neg, size, rng, n_blocks=64) -> np.ndarray:
    """Random sample of ~``size`` negative similarities, float32 (S,).

    Drawn as ``n_blocks`` small products of random query rows x random distractor (or query) rows, block kinds in
    proportion to the two negative populations: random row access for iid pairs costs ~10x more on CPU.
    """
    nq, nd = q.shape[0], d.shape[0]
    m = n_qq_neg + nq * nd
    side = max(1, int(math.ceil(math.sqrt(size / n_blocks))))
    out = []
    for qd_block in rng.random(n_blocks) < (nq * nd / m):
        i = rng.integers(0, nq, side)
        if qd_block:
            out.append((q[i] @ d[rng.integers(0, nd, side)].T).ravel())
        else:
            j = rng.integers(0, nq, side)
            keep = labels[i][:, None] != labels[j][None, :]
            out.append((q[i] @ q[j].T)[keep])
    return np.concatenate(out).astype(np.float32)


def check_embeddings(query_emb, query_labels, distractor_emb=None):
    """Validated inputs of the protocol: (q (Nq, D) unit float32, labels (Nq,), d (Nd, D) unit float32; Nd may be
    0). Raises ValueError on an empty query set, mismatched shapes or dimensions, NaN/inf or zero rows."""
    q = l2_normalise(query_emb, "query embeddings")
    labels = np.asarray(query_labels)
    if q.shape[0] == 0:
        raise ValueError("query set is empty")
    if labels.shape != (q.shape[0],):
        raise ValueError(f"query_labels shape {labels.shape} does not match {q.shape[0]} query embeddings")
    if distractor_emb is None:
        distractor_emb = np.zeros((0, q.shape[1]), np.float32)
    d_raw = np.asarray(distractor_emb)
    if d_raw.ndim != 2 or d_raw.shape[1] != q.shape[1]:
        raise ValueError(f"dimension mismatch: query embeddings are {q.shape}, distractor embeddings {d_raw.shape}")
    d = l2_normalise(d_raw, "distractor embeddings") if d_raw.shape[0] else d_raw.astype(np.float32)
    return q, labels, d


def identification_rate(
    query_emb: np.ndarray,
    query_labels: np.ndarray,
    distractor_emb: np.ndarray | None,
    fprs: Sequence[float] = DEFAULT_FPRS,
    chunk_size: int | None = 1 << 20,
    device: str = "cpu",
    *,
    sample_size: int = 1 << 22,
    window_sigmas: float = 5.0,
    max_collect: int = 1 << 25,
    seed: int = 0,
    threads: int | None = None,
    progress: bool = False,
) -> IDRateResult:
    """TPR at FPR on a query set and a distractor set, exactly the docs/protocol.md protocol.

    query_emb (Nq, D), query_labels (Nq,) identity ids, distractor_emb (Nd, D) (identities not in the query set;
    None or (0, D) for none). Embeddings need not be normalised (cosine similarity is used). fprs in (0, 1]; for
    fpr = 1, N = number_of_negatives is clamped to the last negative. chunk_size: similarity values per block
    (memory ~ 12 bytes each); None computes everything as one block (the unchunked method). device: 'cpu' (numpy)
    or a torch CUDA device. sample_size, window_sigmas: the threshold estimate and its window (in standard
    deviations of the sample rank); max_collect: most similarity values copied during the pass; threads: CPU
    worker threads (default: all cores; each uses single-threaded BLAS).
    Returns IDRateResult; raises ValueError on empty/ill-formed input, NaN/inf, no positive or negative pairs.
    """
    fprs = check_fprs(fprs)
    q, labels, d = check_embeddings(query_emb, query_labels, distractor_emb)
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")

    _, labels, counts = np.unique(labels, return_inverse=True, return_counts=True)   # labels -> 0..C-1
    n_pos = int((counts * (counts - 1) // 2).sum())
    nq, nd = q.shape[0], d.shape[0]
    n_neg = int(nq * (nq - 1) // 2 - n_pos + nq * nd)
    if n_pos == 0:
        raise ValueError("no positive pairs: every query identity has a single image")
    if n_neg == 0:
        raise ValueError("no negative pairs: a single query identity and no distractors")
    ranks = np.array([min(int(f * n_neg), n_neg - 1) for f in fprs], dtype=np.int64)   # N = int(fpr * M)

    rng = np.random.default_rng(seed)
    from threadpoolctl import threadpool_limits

    # small products (sample blocks, per-identity Grams): multi-threaded BLAS only spins; measured 4-10x slower
    with threadpool_limits(limits=1, user_api="blas"):
        sample = _sample_negatives(q, labels, d, n_neg - nq * nd, min(sample_size, 4 * n_neg), rng)
        pos = _positive_scores(q, labels)
    s = len(sample)
    est = np.bincount(_bins(sample), minlength=_NUM_BINS) * (n_neg / max(s, 1))   # expected negatives per bin
    collect = np.zeros(_NUM_BINS, dtype=bool)
    budget = max_collect / 2
    for b_lo, b_hi in _windows(sample, ranks / n_neg, window_sigmas, est, budget):
        collect[b_lo:b_hi + 1] = True

    qd, dd = _to_device(q, device), _to_device(d, device)
    # AUC: copy negatives that share a bin with a positive, if they fit the budget -> exact Mann-Whitney
    pos_bins = np.unique(_bins(pos))
    auc_bins = pos_bins[~collect[pos_bins]]
    if est[collect].sum() + est[auc_bins].sum() <= budget:
        collect[auc_bins] = True

    if threads is None:
        # small problems: thread start-up and BLAS re-configuration cost more than they save
        threads = (os.cpu_count() or 1) if device == "cpu" and n_neg * q.shape[1] >= 1 << 32 else 1
    hist, vals, dropped = _run_pass(qd, labels, dd, chunk_size, device, np.flatnonzero(collect), True, threads,
                                    max_collect, drop_bins=auc_bins if collect[auc_bins].all() else None,
                                    progress=progress)
    if dropped:   # the sample was badly off: only the threshold windows were kept; the AUC becomes bounded
        collect[auc_bins] = False
    if int(hist.sum()) != n_neg:
        raise RuntimeError(f"internal error: histogram holds {int(hist.sum())} of {n_neg} negatives")

    above = np.concatenate([np.cumsum(hist[::-1])[::-1][1:], [0]])   # negatives in bins > b
    target_bins = np.array([_target_bin(above, hist, r) for r in ranks])
    n_passes = 1
    missing = np.unique(target_bins[~collect[target_bins]])
    if missing.size:   # second pass only for thresholds outside their window
        _, extra, _ = _run_pass(qd, labels, dd, chunk_size, device, missing, False, threads, max_collect)
        vals = np.concatenate([vals, extra])
        collect[missing] = True
        n_passes = 2
    vbins = _bins(vals)
    thresholds = np.empty(len(ranks), np.float32)
    for k, (r, b) in enumerate(zip(ranks, target_bins)):
        in_bin = vals[vbins == b]
        if len(in_bin) != hist[b]:
            raise RuntimeError(f"internal error: bin {b} holds {hist[b]} negatives, {len(in_bin)} copied")
        j = len(in_bin) - 1 - (r - above[b])          # the (r - above[b])-th largest, as an ascending index
        thresholds[k] = np.partition(in_bin, j)[j]
    tprs = (len(pos) - np.searchsorted(pos, thresholds, side="right")) / n_pos

    auc, auc_err = _mann_whitney(pos, hist, vals, vbins, collect, n_neg)
    keep = rng.choice(s, min(s, 1 << 16), replace=False) if s else np.zeros(0, np.intp)
    return IDRateResult(fprs=fprs, thresholds=thresholds, tprs=tprs, ranks=ranks, n_positives=n_pos,
                        n_negatives=n_neg, roc_auc=auc, roc_auc_max_error=auc_err, positive_scores=pos,
                        negative_sample=sample[keep], negative_histogram=hist, n_passes=n_passes)


def _windows(sample: np.ndarray, ps: np.ndarray, sigmas: float, est: np.ndarray, budget: float) -> list:
    """Bin ranges [b_lo, b_hi] to copy in the pass: for each rank fraction p, the bins between the sample's order
    statistics at p*S -/+ (sigmas * binomial sd + 1). Windows are taken cheapest first (expected copies from
    ``est``) while their total stays within ``budget``; a threshold without a window costs a second pass."""
    s = len(sample)
    if s == 0:
        return []
    spans = []
    for p in ps:
        w = sigmas * math.sqrt(s * p * (1 - p)) + 1
        spans.append((int(math.floor(p * s - w)), int(math.ceil(p * s + w))))   # descending-order indices
    asc = sorted({s - 1 - i for span in spans for i in span if 0 <= i < s})
    part = np.partition(sample, asc) if asc else sample

    def bin_at(i):   # bin of the i-th largest sample value
        return int(_bins(part[s - 1 - i: s - i])[0])

    ranges = [(0 if lo >= s else bin_at(lo), _NUM_BINS - 1 if hi < 0 else bin_at(hi)) for hi, lo in spans]
    taken, chosen, used = np.zeros(_NUM_BINS, bool), [], 0.0
    for k in np.argsort([est[a:b + 1].sum() for a, b in ranges], kind="stable"):
        a, b = ranges[k]
        extra = est[a:b + 1][~taken[a:b + 1]].sum()
        if used + extra <= budget:
            taken[a:b + 1] = True
            used += extra
            chosen.append((a, b))
    return chosen


def _target_bin(above: np.ndarray, hist: np.ndarray, r: int) -> int:
    """Bin b with above[b] <= r < above[b] + hist[b] (above: count in bins > b, non-increasing in b)."""
    # the first b with above[b] <= r: then above[b - 1] = above[b] + hist[b] > r (or b = 0), so it holds r
    return int(np.searchsorted(-above, -r, side="left"))


def _mann_whitney(pos, hist, vals, vbins, collect, n_neg) -> tuple[float, float]:
    """AUC = P(pos > neg) + 1/2 P(pos == neg) over all pairs, from the histogram; exact where the positive's bin
    was copied (vals (K,) copied negatives, vbins their bins), else the bin's negatives count 1/2.
    Returns (auc, bound on |error|)."""
    pbins = _bins(pos)
    below = np.cumsum(hist) - hist                     # negatives in bins < b
    less = below[pbins].astype(np.float64)
    exact = collect[pbins]
    if exact.any():
        has_pos = np.zeros(_NUM_BINS, bool)
        has_pos[pbins[exact]] = True
        asc = np.sort(vals[has_pos[vbins]])             # copied negatives sharing a bin with a positive
        abins = _bins(asc)
        bin_start = np.searchsorted(abins, pbins[exact], side="left")
        n_less = np.searchsorted(asc, pos[exact], side="left") - bin_start
        n_le = np.searchsorted(asc, pos[exact], side="right") - bin_start
        less[exact] += n_less + 0.5 * (n_le - n_less)
    less[~exact] += 0.5 * hist[pbins[~exact]]
    denom = float(len(pos)) * float(n_neg)
    err = 0.5 * float(hist[pbins[~exact]].sum()) / denom
    return float(less.sum() / denom), err
