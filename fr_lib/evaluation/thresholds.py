"""Threshold files: the cosine threshold a checkpoint decides "same person" with, stored beside it.

    >>> write_threshold("runs/ce-efficientnet/best.pt", result, embedding_size=512, evaluated_on="data/synth-demo")
    >>> read_threshold("runs/ce-efficientnet/best.pt")["threshold"]
    0.81

``fr eval`` writes <run folder>/threshold.json after evaluating a checkpoint on its held-out identities (the
ID-rate protocol's threshold at THRESHOLD_FPR); ``fr compare``, ``fr serve``, ``fr recognize`` and
notebooks/recognition.ipynb read it. File contents::

    {"fpr": 0.01, "threshold": cosine similarity, "tpr": TPR at that threshold, "embedding_size": D,
     "n_positives": int, "n_negatives": int, "evaluated_on": data root or folders, "checkpoint": file name,
     "rule": "same identity if cosine > threshold"}
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from fr_lib.io import write_json

THRESHOLD_FPR = 0.01          # false-accept rate the stored threshold is chosen at
THRESHOLD_FILE = "threshold.json"


def threshold_path(checkpoint: str | os.PathLike) -> Path:
    """<folder of checkpoint>/threshold.json."""
    return Path(checkpoint).parent / THRESHOLD_FILE


def write_threshold(checkpoint: str | os.PathLike, result, embedding_size: int, evaluated_on: str,
                    fpr: float = THRESHOLD_FPR) -> Path:
    """Store the threshold of ``result`` (an IDRateResult whose fprs include ``fpr``) beside ``checkpoint``."""
    fprs = [float(f) for f in result.fprs]
    if float(fpr) not in fprs:
        raise ValueError(f"the result has no threshold at FPR={fpr:g} (it has {fprs}); evaluate with it included")
    k = fprs.index(float(fpr))
    info = {"fpr": float(fpr), "threshold": float(result.thresholds[k]), "tpr": float(result.tprs[k]),
            "embedding_size": int(embedding_size), "n_positives": int(result.n_positives),
            "n_negatives": int(result.n_negatives), "evaluated_on": str(evaluated_on),
            "checkpoint": Path(checkpoint).name, "rule": "same identity if cosine > threshold"}
    return write_json(threshold_path(checkpoint), info)


def read_threshold(checkpoint: str | os.PathLike) -> dict:
    """The threshold file beside ``checkpoint`` as a dict with at least 'threshold' (float) and 'fpr'.

    Raises FileNotFoundError when there is none (run ``fr eval`` on the checkpoint first, or pass a threshold)
    and ValueError when it is not a valid threshold file."""
    path = threshold_path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"no stored threshold at {path}: run `fr eval` on this checkpoint first, or pass a "
                                f"threshold")
    try:
        info = json.loads(path.read_text())
        info["threshold"] = float(info["threshold"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a valid threshold file ({e!r}); rerun `fr eval` or pass a threshold") from e
    info.setdefault("fpr", None)
    return info
