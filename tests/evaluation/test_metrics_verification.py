"""Verification metrics against sklearn, analytic Gaussian results and a hand-written LFW pairs.txt."""
import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import auc, roc_curve

from fr_lib.evaluation.metrics import best_accuracy, eer, lfw_10fold_accuracy, read_lfw_pairs, roc_auc, roc_curve_points
from fr_lib.evaluation.metrics import tpr_at_fpr


def test_roc_points_and_auc_match_sklearn_with_ties():
    rng = np.random.default_rng(0)
    pos = np.round(rng.normal(0.5, 0.2, 300), 1)     # rounded: many ties between and within classes
    neg = np.round(rng.normal(0.1, 0.2, 700), 1)
    fpr, tpr, thr = roc_curve_points(pos, neg)
    f2, t2, th2 = roc_curve(np.r_[np.ones(300), np.zeros(700)], np.r_[pos, neg])
    np.testing.assert_array_equal(fpr, f2)
    np.testing.assert_array_equal(tpr, t2)
    mann_whitney = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (300 * 700)
    assert roc_auc(pos, neg) == pytest.approx(auc(f2, t2)) == pytest.approx(mann_whitney)


def test_tpr_at_fpr_is_the_sorted_negative_rule():
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(1, 1, 500), rng.normal(0, 1, 1001)
    fprs = [0.5, 0.1, 0.01, 0.001]
    tprs, thr = tpr_at_fpr(pos, neg, fprs)
    neg_desc = np.sort(neg)[::-1]
    for f, t, th in zip(fprs, tprs, thr):
        assert th == neg_desc[int(f * 1001)]
        assert t == np.mean(pos > th)


@pytest.mark.parametrize("separation", [1.0, 2.5])
def test_eer_two_gaussians(separation):
    """Equal-variance Gaussians N(d, 1) vs N(0, 1): EER = Phi(-d / 2) at threshold d / 2."""
    rng = np.random.default_rng(2)
    pos, neg = rng.normal(separation, 1, 100_000), rng.normal(0, 1, 100_000)
    rate, threshold = eer(pos, neg)
    assert rate == pytest.approx(norm.cdf(-separation / 2), abs=4e-3)
    assert threshold == pytest.approx(separation / 2, abs=2e-2)
    # at that threshold FPR and FNR agree
    assert np.mean(neg >= threshold) == pytest.approx(np.mean(pos < threshold), abs=3e-3)


def test_eer_separable_is_zero():
    rate, threshold = eer([0.9, 0.8], [0.1, 0.2, 0.3])
    assert rate == 0.0 and 0.3 <= threshold <= 0.8


def test_best_accuracy_brute_force():
    rng = np.random.default_rng(3)
    pos, neg = np.round(rng.normal(0.6, 0.2, 200), 2), np.round(rng.normal(0.2, 0.2, 250), 2)
    acc, thr = best_accuracy(pos, neg)
    cands = np.unique(np.r_[pos, neg, np.inf])
    brute = max(((pos >= t).sum() + (neg < t).sum()) / 450 for t in cands)
    assert acc == pytest.approx(brute)
    assert ((pos >= thr).sum() + (neg < thr).sum()) / 450 == pytest.approx(acc)
    # two Gaussians with equal variance and balanced classes: best accuracy = Phi(d / 2)
    p2, n2 = rng.normal(2, 1, 50_000), rng.normal(0, 1, 50_000)
    assert best_accuracy(p2, n2)[0] == pytest.approx(norm.cdf(1.0), abs=6e-3)


def test_bad_scores():
    with pytest.raises(ValueError, match="no positive"):
        eer([], [0.1])
    with pytest.raises(ValueError, match="NaN"):
        best_accuracy([np.nan], [0.1])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        tpr_at_fpr([0.5], [0.1], [-0.1])


def _write_pairs(tmp_path, folds=2, per=3):
    lines = [f"{folds} {per}"]
    for k in range(folds):
        lines += [f"Person_{k}_{i} 1 {i + 2}" for i in range(per)]
        lines += [f"Person_{k}_{i} 1 Other_{k}_{i} {i + 3}" for i in range(per)]
    path = tmp_path / "pairs.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_lfw_pairs(tmp_path):
    pairs = read_lfw_pairs(_write_pairs(tmp_path))
    assert len(pairs) == 12
    assert pairs[0].path1 == "Person_0_0/Person_0_0_0001.jpg" and pairs[0].path2 == "Person_0_0/Person_0_0_0002.jpg"
    assert pairs[0].issame and pairs[0].fold == 0
    assert pairs[3].path2 == "Other_0_0/Other_0_0_0003.jpg" and not pairs[3].issame
    assert [p.fold for p in pairs] == [0] * 6 + [1] * 6
    bad = tmp_path / "bad.txt"
    bad.write_text("1 1\nA 1 2\nB 1 C\n")
    with pytest.raises(ValueError, match="bad.txt:3"):
        read_lfw_pairs(bad)
    bad.write_text("2 300\nA 1 2\n")
    with pytest.raises(ValueError, match="expected 1200 pair lines"):
        read_lfw_pairs(bad)


def test_lfw_10fold_thresholds_come_from_other_folds():
    rng = np.random.default_rng(4)
    issame = np.tile(np.r_[np.ones(30, bool), np.zeros(30, bool)], 10)
    scores = np.where(issame, rng.normal(0.6, 0.15, 600), rng.normal(0.2, 0.15, 600))
    res = lfw_10fold_accuracy(scores, issame)
    folds = np.repeat(np.arange(10), 60)
    for k in range(10):
        tr = folds != k
        acc, t = best_accuracy(scores[tr & issame], scores[tr & ~issame])
        assert res.fold_thresholds[k] == t
        te = folds == k
        assert res.fold_accuracies[k] == np.mean((scores[te] >= t) == issame[te])
    assert res.mean == pytest.approx(res.fold_accuracies.mean())
    with pytest.raises(ValueError, match="equal folds"):
        lfw_10fold_accuracy(scores[:595], issame[:595])
