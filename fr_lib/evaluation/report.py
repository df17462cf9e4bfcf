"""The comparison table: rows = models, columns = TPR@FPR for each FPR plus ROC-AUC; best of each column in bold.

    >>> df = comparison_table({"CE / EfficientNet": result_a, "ArcFace / EfficientNet": result_b})
    >>> print(to_markdown(df)); to_csv(df, "table.csv"); html = to_html(df)
    >>> df = comparison_table(results, intervals={"CE / EfficientNet": bootstrap_a})   # fr_lib.evaluation.bootstrap

With intervals, markdown and HTML cells read ``0.343 [0.29, 0.40]`` (bounds one decimal shorter than the
estimate) and the CSV gets ``<column>_lo`` / ``<column>_hi`` columns; "best" (bold) is decided on the point
estimates alone. The bounds travel with the table in ``df.attrs`` (see ``interval_bounds``).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from fr_lib.io import atomic_write


def comparison_table(results: dict, intervals: dict | None = None) -> pd.DataFrame:
    """results: {model name: IDRateResult | BootstrapResult | {column: value}} -> DataFrame indexed by model
    (float columns 'TPR@FPR=<fpr>' in the results' order, then 'ROC-AUC'). Missing values are NaN.

    intervals: {model name: BootstrapResult | {column: (low, high)}} for some or all rows; a BootstrapResult given
    as a result brings its own. The bounds are kept in ``df.attrs`` ('ci_low', 'ci_high': {model: {column: value}},
    'ci_note': what they are), read back with ``interval_bounds(df)``."""
    if not results:
        raise ValueError("comparison_table needs at least one result")
    rows = {name: (r.as_dict() if hasattr(r, "as_dict") else dict(r)) for name, r in results.items()}
    df = pd.DataFrame.from_dict(rows, orient="index")
    cols = [c for c in df.columns if c != "ROC-AUC"] + (["ROC-AUC"] if "ROC-AUC" in df.columns else [])
    df = df[cols].astype(float)
    df.index.name = "model"
    given = {name: r for name, r in results.items() if hasattr(r, "intervals")}
    given.update(intervals or {})
    unknown = sorted(set(given) - set(df.index))
    if unknown:
        raise ValueError(f"intervals given for rows that are not in the table: {unknown}")
    if given:
        low, high, notes = {}, {}, set()
        for name, iv in given.items():
            bounds = iv.intervals() if hasattr(iv, "intervals") else dict(iv)
            low[name] = {c: float(lo) for c, (lo, _) in bounds.items() if c in df.columns}
            high[name] = {c: float(hi) for c, (_, hi) in bounds.items() if c in df.columns}
            if hasattr(iv, "confidence"):
                notes.add(f"[low, high]: {iv.confidence:.0%} percentile interval over {iv.n_resamples} "
                          f"identity-level bootstrap resamples")
        df.attrs.update(ci_low=low, ci_high=high, ci_note="; ".join(sorted(notes)))
    return df


def interval_bounds(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(low, high) DataFrames aligned with ``df`` (NaN where a cell has no interval), or None without intervals."""
    if not df.attrs.get("ci_low"):
        return None
    frames = []
    for key in ("ci_low", "ci_high"):
        f = pd.DataFrame.from_dict(df.attrs[key], orient="index", dtype=float)
        frames.append(f.reindex(index=df.index, columns=df.columns).astype(float))
    return frames[0], frames[1]


def best_mask(df: pd.DataFrame) -> pd.DataFrame:
    """True where a value is the best (highest) of its column; ties all count as best; NaN never does."""
    return df.eq(df.max(axis=0, skipna=True), axis=1) & df.notna()


def _formatted(df: pd.DataFrame, decimals: int, bold: tuple[str, str]) -> pd.DataFrame:
    """Cells as text: the point estimate (bold where best), then `` [low, high]`` where an interval exists."""
    best = best_mask(df)
    plain = df.apply(lambda col: col.map(lambda v: "" if pd.isna(v) else f"{v:.{decimals}f}"))
    out = plain.mask(best, bold[0] + plain + bold[1])
    bounds = interval_bounds(df)
    if bounds is not None:
        low, high = bounds
        has = low.notna() & high.notna() & df.notna()
        text = pd.DataFrame({c: [_interval_text(lo, hi, decimals) for lo, hi in zip(low[c], high[c])]
                             for c in df.columns}, index=df.index)
        out = out.mask(has, out + " " + text)
    out.attrs = {}
    return out


def _interval_text(low: float, high: float, decimals: int) -> str:
    """``[low, high]`` with one decimal fewer than the estimate, unless that rounds a real interval to a point."""
    if np.isnan(low) or np.isnan(high):
        return ""
    d = max(decimals - 1, 1)
    if f"{low:.{d}f}" == f"{high:.{d}f}" and low != high:
        d = decimals
    return f"[{low:.{d}f}, {high:.{d}f}]"


def to_markdown(df: pd.DataFrame, decimals: int = 3) -> str:
    """GitHub markdown table, best of each column in **bold** (written by hand: pandas needs tabulate for it);
    with intervals, ``estimate [low, high]`` cells and a line below the table saying what the brackets are."""
    f = _formatted(df, decimals, ("**", "**"))
    header = [df.index.name or ""] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([str(name)] + list(row)) + " |" for name, row in f.iterrows()]
    if df.attrs.get("ci_note"):
        lines += ["", df.attrs["ci_note"]]
    return "\n".join(lines) + "\n"


def to_html(df: pd.DataFrame, decimals: int = 3) -> str:
    """HTML table, best of each column in <b>bold</b>; with intervals, a paragraph below says what they are."""
    html = _formatted(df, decimals, ("<b>", "</b>")).to_html(escape=False)
    return html + (f"\n<p>{df.attrs['ci_note']}</p>" if df.attrs.get("ci_note") else "")


def to_csv(df: pd.DataFrame, path: str | os.PathLike | None = None) -> str:
    """CSV with full-precision numbers (no bold: CSV is for machines); with intervals each column is followed by
    ``<column>_lo`` and ``<column>_hi``. Written atomically when ``path`` is given."""
    bounds = interval_bounds(df)
    if bounds is not None:
        parts = {}
        for c in df.columns:
            parts[c], parts[f"{c}_lo"], parts[f"{c}_hi"] = df[c], bounds[0][c], bounds[1][c]
        df = pd.DataFrame(parts, index=df.index)
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
