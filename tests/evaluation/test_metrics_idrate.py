"""identification_rate against the docs/protocol.md reference fixture, a brute-force materialise-and-sort reference and sklearn."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fr_lib.evaluation.metrics import identification_rate, l2_normalise, tpr_at_fpr

FPRS = [0.5, 0.25, 0.1, 0.05, 0.01, 0.005, 0.001, 1e-5]


def brute_force(query, labels, distractors, fprs):
    """The protocol read literally: materialise every pair, sort the negatives descending, index at int(fpr*M)."""
    q, d = l2_normalise(query), l2_normalise(distractors)
    labels = np.asarray(labels)
    s = q @ q.T
    pos, neg = [], []
    for i in range(len(q)):
        for j in range(i + 1, len(q)):
            (pos if labels[i] == labels[j] else neg).append(s[i, j])
    neg = np.array(neg + list((q @ d.T).ravel()), dtype=np.float32)
    pos = np.array(pos, dtype=np.float32)
    neg_sorted = np.sort(neg)[::-1]
    thresholds = np.array([neg_sorted[min(int(f * len(neg)), len(neg) - 1)] for f in fprs], dtype=np.float32)
    tprs = np.array([(pos > t).sum() / len(pos) for t in thresholds])
    auc = roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg])
    return thresholds, tprs, len(pos), len(neg), auc


def test_design_fixture():
    query = np.array([[1.56, 6.45, -7.68], [-1.1, 6.11, -3.0], [-0.06, -0.98, -1.29],   # identity 2876
                      [8.56, 1.45, 1.11],                                               # 5674
                      [0.7, 1.1, -7.56], [0.05, 0.9, -2.56]])                           # 864
    labels = [2876, 2876, 2876, 5674, 864, 864]
    distractors = np.array([[0.12, -3.23, -5.55], [-1, -0.01, 1.22], [0.06, -0.23, 1.34], [-6.6, 1.45, -1.45],
                            [0.89, 1.98, 1.45]])
    r = identification_rate(query, labels, distractors, fprs=[0.5, 0.3, 0.1])
    assert (r.n_positives, r.n_negatives) == (4, 11 + 30)
    assert r.ranks.tolist() == [20, 12, 4]
    np.testing.assert_allclose(r.thresholds, [-0.011982733, 0.337142658, 0.701307100], atol=1e-7)
    assert r.tprs.tolist() == [0.75, 0.5, 0.5]
    _, _, _, _, auc = brute_force(query, labels, distractors, [0.5])
    assert r.roc_auc == pytest.approx(auc, abs=1e-12) and r.roc_auc_max_error == 0.0


def _data(seed, quantised, nq=240, nd=900, dim=16, ids=50):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ids, dim))
    labels = rng.integers(0, ids, nq)
    query = centres[labels] + 1.5 * rng.standard_normal((nq, dim))
    distractors = rng.standard_normal((nd, dim))
    if quantised:   # +-1 entries in 16-d: unit vectors with entries +-1/4, every cosine exact and massively tied
        query, distractors = np.sign(query), np.sign(distractors)
    return query, labels, distractors


@pytest.mark.parametrize("quantised", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force_and_sklearn(seed, quantised):
    query, labels, distractors = _data(seed, quantised)
    thr, tprs, n_pos, n_neg, auc = brute_force(query, labels, distractors, FPRS)
    r = identification_rate(query, labels, distractors, FPRS, chunk_size=20_000)
    assert (r.n_positives, r.n_negatives) == (n_pos, n_neg)
    if quantised:
        np.testing.assert_array_equal(r.thresholds, thr)
        np.testing.assert_array_equal(r.tprs, tprs)
        assert r.roc_auc == pytest.approx(auc, abs=1e-12)
    else:   # positives come from per-identity products: equal to the full product up to float32 rounding
        np.testing.assert_allclose(r.thresholds, thr, atol=1e-6)
        np.testing.assert_allclose(r.tprs, tprs, atol=2.5 / n_pos)
        assert r.roc_auc == pytest.approx(auc, abs=2e-4)
    assert r.roc_auc_max_error == 0.0
    # tpr_at_fpr on the given scores gives the same numbers
    tp2, th2 = tpr_at_fpr(r.positive_scores, _all_negatives(query, labels, distractors), FPRS)
    np.testing.assert_array_equal(th2.astype(np.float32), r.thresholds)
    np.testing.assert_array_equal(tp2, r.tprs)


def _all_negatives(query, labels, distractors):
    q, d = l2_normalise(query), l2_normalise(distractors)
    labels = np.asarray(labels)
    i, j = np.triu_indices(len(q), 1)
    keep = labels[i] != labels[j]
    return np.r_[(q @ q.T)[i[keep], j[keep]], (q @ d.T).ravel()]


@pytest.mark.parametrize("quantised", [False, True])
def test_chunked_equals_unchunked(quantised):
    query, labels, distractors = _data(3, quantised)
    ref = identification_rate(query, labels, distractors, FPRS, chunk_size=None)
    for chunk, threads in ((300, 1), (997, 2), (4096, 1), (65_536, 2)):   # 300 values: one query row per block
        r = identification_rate(query, labels, distractors, FPRS, chunk_size=chunk, threads=threads)
        np.testing.assert_allclose(r.thresholds, ref.thresholds, rtol=0, atol=0 if quantised else 1e-6)
        np.testing.assert_array_equal(r.tprs, ref.tprs)
        assert r.roc_auc == pytest.approx(ref.roc_auc, abs=1e-12 if quantised else 1e-5)
        np.testing.assert_array_equal(r.negative_histogram.sum(), ref.n_negatives)


@pytest.mark.parametrize("quantised", [False, True])
def test_bad_sample_falls_back_to_second_pass_and_stays_exact(quantised):
    """A 20-value sample with zero-width windows misses the thresholds: the second pass must still be exact,
    and with a tiny copy budget the AUC is the bin-midpoint estimate within its stated bound."""
    query, labels, distractors = _data(4, quantised)
    thr, tprs, _, _, auc = brute_force(query, labels, distractors, FPRS)
    r = identification_rate(query, labels, distractors, FPRS, chunk_size=5000, sample_size=20, window_sigmas=0,
                            max_collect=300, threads=2)
    assert r.n_passes == 2
    np.testing.assert_allclose(r.thresholds, thr, atol=0 if quantised else 1e-6)
    np.testing.assert_array_equal(r.tprs, tprs)
    assert abs(r.roc_auc - auc) <= r.roc_auc_max_error + 1e-9
    assert r.roc_auc_max_error < 0.05


def test_roc_curve_from_histogram_matches_bins():
    query, labels, distractors = _data(5, False)
    r = identification_rate(query, labels, distractors, FPRS)
    fpr, tpr = r.roc_curve()
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    # trapezoid area over the fine histogram approximates the exact Mann-Whitney AUC
    assert np.trapezoid(tpr, fpr) == pytest.approx(r.roc_auc, abs=1e-3)


def test_no_distractors_uses_query_negatives_only():
    query, labels, distractors = _data(6, False)
    r = identification_rate(query, labels, None, [0.1])
    thr, tprs, n_pos, n_neg, _ = brute_force(query, labels, distractors[:0], [0.1])
    assert r.n_negatives == n_neg
    np.testing.assert_allclose(r.thresholds, thr, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(query_emb=np.zeros((0, 4)), query_labels=[]), "query set is empty"),
    (dict(query_labels=[0, 1, 2, 3]), "no positive pairs"),
    (dict(query_emb=np.full((4, 4), np.nan)), "NaN or inf"),
    (dict(distractor_emb=np.ones((3, 5))), "dimension mismatch"),
    (dict(fprs=[0.0]), r"\(0, 1\]"),
    (dict(fprs=[1.5]), r"\(0, 1\]"),
    (dict(query_labels=[0, 0, 1]), "does not match"),
])
def test_bad_input_is_a_clear_error(kwargs, match):
    rng = np.random.default_rng(0)
    args = dict(query_emb=rng.standard_normal((4, 4)), query_labels=[0, 0, 1, 1],
                distractor_emb=rng.standard_normal((3, 4)), fprs=[0.1])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        identification_rate(**args)
    if "distractor_emb" in kwargs:
        args["distractor_emb"] = np.array([[np.inf, 0, 0, 0]])
        with pytest.raises(ValueError, match="distractor embeddings contain NaN or inf"):
            identification_rate(**args)


def test_fpr_one_is_the_smallest_negative():
    query, labels, distractors = _data(7, False, nq=40, nd=30)
    r = identification_rate(query, labels, distractors, [1.0])
    assert r.thresholds[0] == pytest.approx(_all_negatives(query, labels, distractors).min(), abs=1e-6)
