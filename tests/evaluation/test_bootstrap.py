"""Identity-level bootstrap: the point estimate is identification_rate's, the intervals equal those of explicitly
materialised resampled sets, and they shrink as identities are added."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fr_lib.evaluation.bootstrap import IdentityPairs, bootstrap_identification_rate
from fr_lib.evaluation.metrics import identification_rate

FPRS = (0.5, 0.25, 0.1, 0.05)


def _gaussian(n_id, per_id, n_dist_id, dim=16, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_id), per_id)
    q = rng.standard_normal((n_id, dim))[labels] + noise * rng.standard_normal((n_id * per_id, dim))
    d_labels = np.repeat(np.arange(n_dist_id), per_id)
    d = rng.standard_normal((n_dist_id, dim))[d_labels] + noise * rng.standard_normal((n_dist_id * per_id, dim))
    return q, labels, d, d_labels


def _exact(n_id, per_id, n_dist_id, dim=64, flips=20, seed=0):
    """Unit vectors with entries +-1/8 (64-d): every cosine is a multiple of 1/32, exact in float32 whatever the
    order of the products, and ties are frequent."""
    rng = np.random.default_rng(seed)

    def faces(n, per):
        signs = np.repeat(rng.choice([-1.0, 1.0], (n, dim)), per, axis=0)
        flip = rng.random(signs.shape) < flips / dim
        return (np.where(flip, -signs, signs) / 8).astype(np.float32), np.repeat(np.arange(n), per)

    q, labels = faces(n_id, per_id)
    d, d_labels = faces(n_dist_id, per_id)
    return q, labels, d, d_labels


@pytest.mark.parametrize("chunk_size", [1 << 20, 7])
def test_point_estimate_with_all_weights_one_is_identification_rate(chunk_size):
    q, labels, d, d_labels = _gaussian(12, 5, 16)
    ref = identification_rate(q, labels, d, FPRS, chunk_size=chunk_size)
    b = bootstrap_identification_rate(q, labels, d, d_labels, FPRS, n_resamples=5, chunk_size=chunk_size)
    np.testing.assert_array_equal(b.thresholds, ref.thresholds)
    np.testing.assert_array_equal(b.tprs, ref.tprs)
    assert ref.roc_auc_max_error == 0.0 and b.roc_auc == pytest.approx(ref.roc_auc, rel=1e-12)
    assert b.as_dict() == pytest.approx(ref.as_dict(), rel=1e-12)


def test_protocol_fixture_thresholds():
    # docs/protocol.md's reference fixture: 4 positives, 41 negatives
    q = np.array([[1.56, 6.45, -7.68], [-1.1, 6.11, -3.0], [-0.06, -0.98, -1.29], [8.56, 1.45, 1.11],
                  [0.7, 1.1, -7.56], [0.05, 0.9, -2.56]])
    labels = np.array([2876, 2876, 2876, 5674, 864, 864])
    d = np.array([[0.12, -3.23, -5.55], [-1, -0.01, 1.22], [0.06, -0.23, 1.34], [-6.6, 1.45, -1.45],
                  [0.89, 1.98, 1.45]])
    pairs = IdentityPairs(q, labels, d)
    thresholds, tprs, _ = pairs.evaluate(np.ones(3), np.ones(5), (0.5, 0.3, 0.1))
    np.testing.assert_allclose(thresholds, [-0.011982733, 0.337142658, 0.701307100], atol=1e-6)
    np.testing.assert_array_equal(tprs, [0.75, 0.5, 0.5])


def _materialised(q, labels, d, d_labels, drawn_q, drawn_d, fprs):
    """The protocol on a resampled set built image by image: drawn identity copies (identity, copy number);
    pairs of two copies of one identity are left out; cosines looked up in the original pair matrix."""
    s_qq, s_qd = q @ q.T, q @ d.T
    items = [(i, img, t) for t, i in enumerate(drawn_q) for img in np.flatnonzero(labels == i)]
    d_items = [img for k in drawn_d for img in np.flatnonzero(d_labels == k)]
    pos, neg = [], []
    for a in range(len(items)):
        for b in range(a + 1, len(items)):
            (ia, xa, ta), (ib, xb, tb) = items[a], items[b]
            if ia != ib:
                neg.append(s_qq[xa, xb])
            elif ta == tb:
                pos.append(s_qq[xa, xb])
    neg += [s_qd[x, y] for (_, x, _) in items for y in d_items]
    if not pos or not neg:
        return None
    pos, neg = np.array(pos), np.sort(np.array(neg))[::-1]
    thresholds = np.array([neg[min(int(f * len(neg)), len(neg) - 1)] for f in fprs])
    tprs = np.array([(pos > t).mean() for t in thresholds])
    auc = roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg])
    return tprs, auc


@pytest.mark.parametrize("segment", [256, 3])   # 3: thresholds searched inside many short segments
def test_intervals_equal_brute_force_materialised_resamples(segment, monkeypatch):
    monkeypatch.setattr(IdentityPairs, "SEGMENT", segment)
    q, labels, d, d_labels = _exact(5, 3, 4)
    n_resamples, seed, conf = 40, 3, 0.9
    b = bootstrap_identification_rate(q, labels, d, d_labels, FPRS, n_resamples=n_resamples, confidence=conf,
                                      seed=seed)
    # the documented draws: per resample, query identities then distractor identities, from one default_rng(seed)
    rng = np.random.default_rng(seed)
    tpr_s, auc_s = [], []
    for _ in range(n_resamples):
        drawn_q, drawn_d = rng.integers(0, 5, 5), rng.integers(0, 4, 4)
        out = _materialised(q, labels, d, d_labels, drawn_q, drawn_d, FPRS)
        if out is not None:
            tpr_s.append(out[0])
            auc_s.append(out[1])
    assert b.n_skipped == n_resamples - len(tpr_s)
    np.testing.assert_array_equal(b.tpr_samples, np.array(tpr_s))
    np.testing.assert_allclose(b.roc_auc_samples, auc_s, rtol=0, atol=1e-12)
    a = (1 - conf) / 2
    np.testing.assert_array_equal(b.tpr_low, np.quantile(tpr_s, a, axis=0))
    np.testing.assert_array_equal(b.tpr_high, np.quantile(tpr_s, 1 - a, axis=0))
    assert b.roc_auc_low == pytest.approx(np.quantile(auc_s, a), abs=1e-12)
    assert b.roc_auc_high == pytest.approx(np.quantile(auc_s, 1 - a), abs=1e-12)
    assert np.all(b.tpr_low <= b.tpr_high) and b.tpr_samples.std(axis=0).max() > 0   # the resamples differ


def test_without_distractor_labels_each_distractor_image_is_a_unit():
    q, labels, d, _ = _exact(4, 3, 3)
    b = bootstrap_identification_rate(q, labels, d, None, FPRS, n_resamples=10)
    rng = np.random.default_rng(0)
    for k in range(10):
        drawn_q, drawn_d = rng.integers(0, 4, 4), rng.integers(0, len(d), len(d))
        tprs, auc = _materialised(q, labels, d, np.arange(len(d)), drawn_q, drawn_d, FPRS)
        np.testing.assert_array_equal(b.tpr_samples[k], tprs)
    assert b.n_distractor_units == len(d) and b.n_skipped == 0


def test_intervals_shrink_with_more_identities():
    # 16x the identities: the interval narrows ~4x (sqrt(16)); measured 0.20-0.35x over generator seeds 0-2
    widths = {}
    for n_id in (6, 96):
        q, labels, d, d_labels = _gaussian(n_id, 4, n_id, dim=64, noise=1.5, seed=1)
        b = bootstrap_identification_rate(q, labels, d, d_labels, (0.1,), n_resamples=100, seed=0)
        assert b.tpr_low[0] <= b.tprs[0] <= b.tpr_high[0] and b.roc_auc_low <= b.roc_auc <= b.roc_auc_high
        widths[n_id] = (b.tpr_high[0] - b.tpr_low[0], b.roc_auc_high - b.roc_auc_low)
    assert widths[96][0] < 0.5 * widths[6][0] and widths[96][1] < 0.5 * widths[6][1]


def test_degenerate_resamples_are_skipped_and_counted():
    # only identity 0 has pairs: resamples that miss it have no positive and are skipped
    q, _, d, _ = _gaussian(3, 2, 2)
    labels = np.array([0, 0, 1, 2, 3, 4])
    b = bootstrap_identification_rate(q, labels, d, None, FPRS, n_resamples=60, seed=0)
    assert 0 < b.n_skipped < 60 and len(b.tpr_samples) == 60 - b.n_skipped
    json_ = b.to_json()
    assert json_["n_skipped"] == b.n_skipped and set(json_["intervals"]) == set(b.as_dict())


def test_bad_input_raises_clear_errors():
    q, labels, d, d_labels = _gaussian(4, 3, 2)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_identification_rate(q, labels, d, n_resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_identification_rate(q, labels, d, confidence=95)
    with pytest.raises(ValueError, match="distractor_labels shape"):
        bootstrap_identification_rate(q, labels, d, d_labels[:-1])
    with pytest.raises(ValueError, match="max_negatives"):
        bootstrap_identification_rate(q, labels, d, max_negatives=10)
    with pytest.raises(ValueError, match="no positive pairs"):
        bootstrap_identification_rate(q, np.arange(len(q)), d)
    with pytest.raises(ValueError, match="counts must have shapes"):
        IdentityPairs(q, labels, d).evaluate(np.ones(3), np.ones(len(d)))


def test_band_fprs_keep_the_table_columns():
    from fr_lib.evaluation.bootstrap import band_fprs
    from fr_lib.evaluation.metrics import DEFAULT_FPRS

    f = band_fprs()
    assert np.all(np.diff(f) > 0) and f[0] == 1e-3 and f[-1] == 1.0 and len(f) > len(DEFAULT_FPRS) + 10
    assert set(DEFAULT_FPRS) <= set(f.tolist())
    names = [f"{x:g}" for x in f]
    assert len(set(names)) == len(names)            # no grid point shares a column name with a table FPR


def test_bootstrap_intervals_of_a_table_and_rows_too_large():
    from fr_lib.evaluation.bootstrap import bootstrap_intervals

    q, labels, d, d_labels = _gaussian(6, 3, 4)
    results = {"a": identification_rate(q, labels, d, FPRS)}
    out, reasons = bootstrap_intervals(results, {"a": (q, labels, d, d_labels)}, n_resamples=20)
    assert reasons == {} and list(out) == ["a"]
    b = out["a"]
    direct = bootstrap_identification_rate(q, labels, d, d_labels, b.fprs, n_resamples=20)
    np.testing.assert_array_equal(b.tpr_samples, direct.tpr_samples)
    assert set(b.intervals()) >= set(results["a"].as_dict())       # the table's columns, plus the band's grid
    out, reasons = bootstrap_intervals(results, {"a": (q, labels, d)}, n_resamples=20, max_negatives=10)
    assert out == {} and "max_negatives" in reasons["a"]
