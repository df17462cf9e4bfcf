"""Comparison table: values from the results, best per column in bold, CSV round trip."""
import io

import numpy as np
import pandas as pd
import pytest

from fr_lib.evaluation.metrics import identification_rate
from fr_lib.evaluation.report import best_mask, comparison_table, to_csv, to_html, to_markdown, write_table


@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 4)
    centres = rng.standard_normal((10, 8))
    results = {}
    for name, noise in (("good", 0.3), ("bad", 3.0)):
        q = centres[labels] + noise * rng.standard_normal((40, 8))
        results[name] = identification_rate(q, labels, rng.standard_normal((50, 8)), fprs=[0.5, 0.1, 0.01])
    results["partial"] = {"TPR@FPR=0.5": 1.0}
    return results, comparison_table(results)


def test_columns_and_values_come_from_the_results(table):
    results, df = table
    assert list(df.columns) == ["TPR@FPR=0.5", "TPR@FPR=0.1", "TPR@FPR=0.01", "ROC-AUC"]
    assert list(df.index) == ["good", "bad", "partial"]
    np.testing.assert_array_equal(df.loc["good"].values[:3], results["good"].tprs)
    assert df.loc["bad", "ROC-AUC"] == results["bad"].roc_auc
    assert np.isnan(df.loc["partial", "ROC-AUC"])


def test_best_of_each_column_is_bold(table):
    _, df = table
    best = best_mask(df)
    for col in df.columns:
        assert best[col].tolist() == (df[col] == df[col].max()).tolist()
    md = to_markdown(df, decimals=3)
    lines = md.strip().splitlines()
    assert lines[0].startswith("| model | TPR@FPR=0.5")
    for name, row in df.iterrows():
        cells = [ln for ln in lines if ln.startswith(f"| {name} |")][0].strip("| ").split(" | ")[1:]
        for col, cell in zip(df.columns, cells):
            v = row[col]
            text = "" if np.isnan(v) else f"{v:.3f}"
            assert cell == (f"**{text}**" if best.loc[name, col] else text)
    html = to_html(df)
    assert html.count("<b>") == int(best.values.sum())


def test_csv_round_trip_and_files(table, tmp_path):
    _, df = table
    back = pd.read_csv(io.StringIO(to_csv(df)), index_col=0)
    pd.testing.assert_frame_equal(back, df, check_exact=True, check_names=False)
    paths = write_table(df, tmp_path)
    assert all(p.is_file() for p in paths.values())
    assert "**" in paths["md"].read_text()


def test_empty_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        comparison_table({})


@pytest.fixture
def with_intervals():
    from fr_lib.evaluation.bootstrap import bootstrap_identification_rate

    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(12), 4)
    centres = rng.standard_normal((12, 8))
    results, boots = {}, {}
    for name, noise in (("good", 0.8), ("bad", 2.0)):
        q = centres[labels] + noise * rng.standard_normal((48, 8))
        d = rng.standard_normal((40, 8))
        results[name] = identification_rate(q, labels, d, fprs=[0.5, 0.1])
        boots[name] = bootstrap_identification_rate(q, labels, d, None, [0.5, 0.1], n_resamples=40)
    results["no interval"] = {"TPR@FPR=0.5": 0.99, "ROC-AUC": 0.5}
    return results, boots, comparison_table(results, intervals=boots)


def test_markdown_and_html_cells_show_intervals_and_bold_stays_on_the_estimate(with_intervals):
    results, boots, df = with_intervals
    pd.testing.assert_frame_equal(df, comparison_table(results))   # the values are the point estimates
    best = best_mask(df)
    md = to_markdown(df)
    lines = md.splitlines()
    for name in df.index:
        cells = [ln for ln in lines if ln.startswith(f"| {name} |")][0].strip("| ").split(" | ")[1:]
        for col, cell in zip(df.columns, cells):
            v = df.loc[name, col]
            text = "" if np.isnan(v) else f"{v:.3f}"
            if best.loc[name, col]:
                text = f"**{text}**"
            if name in boots:
                lo, hi = boots[name].intervals()[col]
                d = 2 if f"{lo:.2f}" != f"{hi:.2f}" or lo == hi else 3
                text += f" [{lo:.{d}f}, {hi:.{d}f}]"
            assert cell == text
    assert best.loc["no interval", "TPR@FPR=0.5"]                  # 0.99 beats both, without an interval
    assert "95% percentile interval over 40 identity-level bootstrap resamples" in lines[-1]
    lo, hi = boots["bad"].intervals()["TPR@FPR=0.1"]
    html = to_html(df)
    assert f"{df.loc['bad', 'TPR@FPR=0.1']:.3f} [{lo:.2f}, {hi:.2f}]" in html and "percentile interval" in html
    assert html.count("<b>") == int(best.values.sum())


def test_csv_has_lo_hi_columns_with_the_bounds(with_intervals, tmp_path):
    _, boots, df = with_intervals
    back = pd.read_csv(io.StringIO(to_csv(df)), index_col=0)
    assert list(back.columns[:3]) == ["TPR@FPR=0.5", "TPR@FPR=0.5_lo", "TPR@FPR=0.5_hi"]
    for name, b in boots.items():
        for col, (lo, hi) in b.intervals().items():
            assert (back.loc[name, f"{col}_lo"], back.loc[name, f"{col}_hi"]) == (lo, hi)
            assert back.loc[name, col] == df.loc[name, col]
    assert back.loc["no interval", ["TPR@FPR=0.5_lo", "ROC-AUC_hi"]].isna().all()
    paths = write_table(df, tmp_path)
    assert "_lo" in paths["csv"].read_text() and "[" in paths["md"].read_text()


def test_bootstrap_result_as_the_row_brings_its_interval(with_intervals):
    _, boots, _ = with_intervals
    df = comparison_table({"good": boots["good"]})
    assert df.loc["good", "TPR@FPR=0.1"] == boots["good"].tprs[1]
    assert df.attrs["ci_low"]["good"]["ROC-AUC"] == boots["good"].roc_auc_low
    with pytest.raises(ValueError, match="not in the table"):
        comparison_table({"good": boots["good"]}, intervals={"other": boots["bad"]})
