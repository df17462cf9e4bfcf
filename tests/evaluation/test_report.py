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
