"""The comparison table: rows = models, columns = TPR@FPR for each FPR plus ROC-AUC; best of each column in bold.

    >>> df = comparison_table({"CE / EfficientNet": result_a, "ArcFace / EfficientNet": result_b})
    >>> print(to_markdown(df)); to_csv(df, "table.csv"); html = to_html(df)
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from fr_lib.io import atomic_write


def comparison_table(results: dict) -> pd.DataFrame:
    """results: {model name: IDRateResult | {column: value}} -> DataFrame indexed by model (float columns
    'TPR@FPR=<fpr>' in the results' order, then 'ROC-AUC'). Missing values are NaN."""
    if not results:
        raise ValueError("comparison_table needs at least one result")
    rows = {name: (r.as_dict() if hasattr(r, "as_dict") else dict(r)) for name, r in results.items()}
    df = pd.DataFrame.from_dict(rows, orient="index")
    cols = [c for c in df.columns if c != "ROC-AUC"] + (["ROC-AUC"] if "ROC-AUC" in df.columns else [])
    df = df[cols].astype(float)
    df.index.name = "model"
    return df


def best_mask(df: pd.DataFrame) -> pd.DataFrame:
    """True where a value is the best (highest) of its column; ties all count as best; NaN never does."""
    return df.eq(df.max(axis=0, skipna=True), axis=1) & df.notna()


def _formatted(df: pd.DataFrame, decimals: int, bold: tuple[str, str]) -> pd.DataFrame:
    best = best_mask(df)
    out = df.apply(lambda col: col.map(lambda v: "" if pd.isna(v) else f"{v:.{decimals}f}"))
    return out.mask(best, bold[0] + out + bold[1])


def to_markdown(df: pd.DataFrame, decimals: int = 3) -> str:
    """GitHub markdown table, best of each column in **bold** (written by hand: pandas needs tabulate for it)."""
    f = _formatted(df, decimals, ("**", "**"))
    header = [df.index.name or ""] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([str(name)] + list(row)) + " |" for name, row in f.iterrows()]
    return "\n".join(lines) + "\n"


def to_html(df: pd.DataFrame, decimals: int = 3) -> str:
    """HTML table, best of each column in <b>bold</b>."""
    return _formatted(df, decimals, ("<b>", "</b>")).to_html(escape=False)


def to_csv(df: pd.DataFrame, path: str | os.PathLike | None = None) -> str:
    """CSV with full-precision numbers (no bold: CSV is for machines); written atomically when ``path`` is given."""
    text = df.to_csv(float_format=lambda v: np.format_float_positional(v, trim="-"))
    if path is not None:
        atomic_write(path, text)
    return text


def write_table(df: pd.DataFrame, out_dir: str | os.PathLike, stem: str = "table", decimals: int = 3) -> dict:
    """Write <stem>.md, <stem>.csv and <stem>.html under out_dir (atomically); returns {format: path}."""
    out_dir = Path(out_dir)
    paths = {"md": out_dir / f"{stem}.md", "csv": out_dir / f"{stem}.csv", "html": out_dir / f"{stem}.html"}
    atomic_write(paths["md"], to_markdown(df, decimals))
    to_csv(df, paths["csv"])
    atomic_write(paths["html"], to_html(df, decimals))
    return paths
