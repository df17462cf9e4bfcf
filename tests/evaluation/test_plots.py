"""Figures: the right panels, curves equal to the data given, legends carry the AUC."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from fr_lib.evaluation.metrics import identification_rate  # noqa: E402
from fr_lib.evaluation.plots import plot_roc, plot_similarity_distributions, plot_training_curves  # noqa: E402


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(12), 5)
    centres = rng.standard_normal((12, 16))
    q = centres[labels] + 0.8 * rng.standard_normal((60, 16))
    d = rng.standard_normal((80, 16))
    return q, labels, d


def test_plot_roc_linear_and_log_with_auc(data):
    q, labels, d = data
    r = identification_rate(q, labels, d)
    fig = plot_roc({"model A": r, "given": {"fpr": [0, 0.1, 1], "tpr": [0, 0.5, 1], "auc": 0.7}})
    ax_lin, ax_log = fig.axes[:2]
    assert ax_lin.get_xscale() == "linear" and ax_log.get_xscale() == "log"
    labels_ = [t.get_text() for t in ax_log.get_legend().get_texts()]
    assert labels_ == [f"model A (AUC {r.roc_auc:.4f})", "given (AUC 0.7000)"]
    fpr, tpr = r.roc_curve()
    np.testing.assert_array_equal(ax_lin.lines[0].get_xdata(), fpr)
    np.testing.assert_array_equal(ax_lin.lines[0].get_ydata(), tpr)
    # protocol points drawn on the log axis at (fpr, tpr)
    np.testing.assert_allclose(ax_log.collections[0].get_offsets(), np.c_[r.fprs, r.tprs])
    plt.close(fig)


def test_similarity_distributions_panels(data):
    q, labels, d = data
    fig = plot_similarity_distributions({"A": (q, labels, d), "B": (q * 2, labels, None)}, max_pairs=500)
    assert len(fig.axes) == 4
    assert fig.axes[0].get_title().startswith("A: positives vs negatives")
    assert fig.axes[1].get_title().startswith("A: query-query vs query-distractor")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["same identity (query)", "different identity (query)"]
    plt.close(fig)


def test_training_curves(tmp_path):
    df = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [3, 2, 1.5], "val_loss": [3.1, 2.4, 2.0],
                       "val_accuracy": [0.1, 0.3, 0.5], "tpr@fpr=0.01": [0.05, 0.1, 0.2], "epoch_seconds": [9, 9, 9]})
    path = tmp_path / "metrics.csv"
    df.to_csv(path, index=False)
    fig = plot_training_curves(path)
    left, right = fig.axes[:2]
    assert [ln.get_label() for ln in left.lines] == ["train_loss", "val_loss"]
    assert [ln.get_label() for ln in right.lines] == ["val_accuracy", "tpr@fpr=0.01"]
    np.testing.assert_array_equal(left.lines[1].get_ydata(), df["val_loss"])
    plt.close(fig)
    with pytest.raises(ValueError, match="epoch"):
        plot_training_curves(pd.DataFrame({"loss": [1]}))


def test_plot_roc_draws_bootstrap_bands_on_both_axes(data):
    from fr_lib.evaluation.bootstrap import band_fprs, bootstrap_identification_rate

    q, labels, d = data
    r = identification_rate(q, labels, d)
    b = bootstrap_identification_rate(q, labels, d, None, band_fprs(), n_resamples=30)
    fig = plot_roc({"model A": r, "no band": r}, intervals={"model A": b})
    ax_lin, ax_log = fig.axes[:2]
    for ax in (ax_lin, ax_log):
        (band,) = [c for c in ax.collections if type(c).__name__ in ("PolyCollection", "FillBetweenPolyCollection")]
        verts = band.get_paths()[0].vertices
        # the polygon runs along the upper bound and back along the lower one at the bootstrap's FPRs
        for f, lo, hi in zip(b.fprs, b.tpr_low, b.tpr_high):
            at = verts[np.isclose(verts[:, 0], f)][:, 1]
            assert np.isclose(at, lo).any() and np.isclose(at, hi).any()
        assert np.allclose(band.get_facecolor()[0][:3], matplotlib.colors.to_rgb(ax.lines[0].get_color()))
    legend = [t.get_text() for t in ax_log.get_legend().get_texts()]
    assert legend[0] == f"model A (AUC {r.roc_auc:.4f} [{b.roc_auc_low:.3f}, {b.roc_auc_high:.3f}])"
    assert legend[1] == f"no band (AUC {r.roc_auc:.4f})"
    assert set(np.round(b.fprs, 12)) >= set(np.round(r.fprs, 12))      # the table's FPRs are on the band
    plt.close(fig)
    with pytest.raises(ValueError, match="without a result"):
        plot_roc({"model A": r}, intervals={"other": b})


def test_similarity_axis_covers_the_data_when_all_cosines_are_near_one():
    # a random-weights model: every embedding is one direction plus a little noise, all cosines in ~[0.99, 1]
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 5)
    common = rng.standard_normal(32)
    q = common + 0.02 * rng.standard_normal((30, 32))
    d = common + 0.02 * rng.standard_normal((20, 32))
    fig = plot_similarity_distributions({"random": (q, labels, d)})
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    dn = d / np.linalg.norm(d, axis=1, keepdims=True)
    sims = np.r_[(qn @ qn.T)[np.triu_indices(30, 1)], (qn @ dn.T).ravel()]
    assert sims.min() > 0.99
    for ax in fig.axes[:2]:
        lo, hi = ax.get_xlim()
        assert lo <= sims.min() and hi >= sims.max() - 1e-6
        assert hi - lo < 0.05                       # not the fixed [-1, 1] axis with the data in one sliver
        # the step histograms (filled polygons) are within the axes and span a good part of the x axis
        verts = np.concatenate([c.get_paths()[0].vertices for c in ax.collections if c.get_paths()])
        assert 0 < verts[:, 1].max() <= ax.get_ylim()[1]
        assert verts[:, 0].max() - verts[:, 0].min() > 0.5 * (hi - lo)
    plt.close(fig)


def test_similarity_range():
    from fr_lib.evaluation.plots import similarity_range

    lo, hi = similarity_range([np.array([0.2, 0.6]), np.array([-0.2])])
    assert lo == pytest.approx(-0.2 - 0.04) and hi == pytest.approx(0.6 + 0.04)
    lo, hi = similarity_range([np.full(10, 0.999)])
    assert lo < 0.999 < hi and hi - lo == pytest.approx(0.02 * 1.1)
    assert similarity_range([]) == (-1.0, 1.0)
