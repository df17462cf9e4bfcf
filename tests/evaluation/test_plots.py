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
