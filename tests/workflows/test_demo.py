"""`fr demo --preset tiny` end to end on a tiny synthetic dataset: the artefacts exist, the table's numbers are the
ID-rate protocol's on the embeddings the demo computed (checked by brute force), the best of each column is bold,
finished runs are reused, and a run folder the demo did not make is never overwritten. Not the 15-minute run."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fr_lib.io import safe_filename

FPRS = (0.5, 0.25, 0.1, 0.05, 0.01, 0.005, 0.001)
TINY = ["--set", "data.image_size=80", "--set", "data.eval_identity_fraction=0.4", "--set", "data.max_images_per_identity=5", "--set", "data.batch_size=8"]
TRAINED_ROWS = ["CE / EfficientNet", "CE / InceptionResnetV1", "Triplet / EfficientNet", "ArcFace / EfficientNet"]
RANDOM_ROW = "InceptionResnetV1 with random weights"


def brute_force_tprs(query, labels, distractors, fprs, eps=1e-6):
    """The ID-rate protocol (docs/protocol.md) written out on the full similarity matrix (fine at test sizes), in float64. Returns
    (low, high) TPR bounds per FPR: the TPR with the threshold moved up / down by ``eps``, because a barely trained
    model can put many similarities within float32 rounding (~1e-7) of the threshold."""
    q = query.astype(np.float64)
    d = distractors.astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    s = q @ q.T
    i, j = np.triu_indices(len(q), 1)
    same = labels[i] == labels[j]
    pos = s[i, j][same]
    neg = np.sort(np.concatenate([s[i, j][~same], (q @ d.T).ravel()]))[::-1]
    thresholds = [neg[int(f * len(neg))] for f in fprs]
    return [float(np.mean(pos > t + eps)) for t in thresholds], [float(np.mean(pos > t - eps)) for t in thresholds]


@pytest.fixture(scope="module")
def demo_run(synth_root, tmp_path_factory):
    from fr_lib.cli import main

    base = tmp_path_factory.mktemp("demo")
    args = ["demo", "--preset", "tiny", "--device", "cpu", "--data", str(synth_root), "--runs", str(base / "runs"),
            "--out", str(base / "out"), "--no-progress", *TINY]
    assert main(args) == 0
    return base, args


def test_demo_writes_every_artefact(demo_run):
    base, _ = demo_run
    out = base / "out"
    for name in ("table.md", "table.csv", "table.html", "results.json", "training.md", "roc_curves.png",
                 "similarity_distributions.png"):
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    assert set(TRAINED_ROWS + [RANDOM_ROW]) <= set(results["models"])
    assert set(results["training"]) == set(TRAINED_ROWS)
    for row in TRAINED_ROWS:   # the default checkpoint is the last epoch's (fr_lib.evaluation.held_out)
        assert Path(results["training"][row]["checkpoint"]).name == "last.pt"
        assert results["models"][row]["source"] == results["training"][row]["checkpoint"]
    assert results["notes"]["evaluated checkpoint"] == "last"
    # the random row sees the trained InceptionResnetV1's input size (80 px here)
    assert results["models"][RANDOM_ROW]["image_size"] == 80
    assert results["notes"][RANDOM_ROW] == "random baseline at 80 px"
    split = results["split"]
    assert split["query_images"] == results["models"][RANDOM_ROW]["n_query"] > 0
    assert split["distractor_identities"] == results["models"][RANDOM_ROW]["n_distractor_identities"] > 0


def test_table_is_the_protocol_on_the_demo_embeddings(demo_run):
    base, _ = demo_run
    out = base / "out"
    results = json.loads((out / "results.json").read_text())["models"]
    table = pd.read_csv(out / "table.csv", index_col=0)
    cache = base / "runs" / ".eval-cache"
    for row in TRAINED_ROWS + [RANDOM_ROW]:
        key = safe_filename(row)
        with np.load(cache / f"{key}-query.npz") as zq, np.load(cache / f"{key}-distractors.npz") as zd:
            low, high = brute_force_tprs(zq["embeddings"], zq["labels"], zd["embeddings"], FPRS)
        got = [results[row]["tpr_at_fpr"][f"{f:g}"] for f in FPRS]
        assert all(lo - 1e-12 <= g <= hi + 1e-12 for lo, g, hi in zip(low, got, high)), (row, low, got, high)
        assert list(table.loc[row, [f"TPR@FPR={f:g}" for f in FPRS]]) == pytest.approx(got, abs=1e-12)
        assert table.loc[row, "ROC-AUC"] == pytest.approx(results[row]["roc_auc"], abs=1e-12)


def test_markdown_bolds_the_best_of_each_column(demo_run):
    base, _ = demo_run
    table = pd.read_csv(base / "out" / "table.csv", index_col=0)
    lines = [line for line in (base / "out" / "table.md").read_text().splitlines() if line.startswith("| ")][1:]
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        name, values = cells[0], cells[1:]
        points = [c for c in table.columns if not c.endswith(("_lo", "_hi"))]   # cells: "estimate [lo, hi]"
        for col, cell in zip(points, values):
            best = table[col].max()
            assert cell.startswith("**") == (table.loc[name, col] == best), (name, col)
            # Python's round, like the f-string, rounds the exact binary value; numpy's turns 0.8485 into 0.848
            estimate = cell.split(" [")[0]
            assert float(estimate.strip("*")) == pytest.approx(round(float(table.loc[name, col]), 3), abs=1e-9)


def test_rerun_reuses_finished_runs(demo_run, capsys):
    from fr_lib.cli import main

    base, args = demo_run
    ckpts = sorted((base / "runs").glob("*/best.pt"))
    before = {p: os.stat(p).st_mtime_ns for p in ckpts}
    assert main(args) == 0
    assert {p: os.stat(p).st_mtime_ns for p in ckpts} == before
    training = json.loads((base / "out" / "results.json").read_text())["training"]
    assert {t["state"] for t in training.values()} == {"reused"}
    assert capsys.readouterr().out.count("reused (") == len(TRAINED_ROWS)


def test_a_run_the_demo_did_not_make_is_not_overwritten(demo_run, capsys):
    from fr_lib.cli import main

    base, args = demo_run
    run = base / "runs" / "ce-efficientnet"
    marker = run / "fr-demo.json"
    saved = marker.read_text()
    marker.unlink()                     # now it looks like somebody's own run
    try:
        before = os.stat(run / "best.pt").st_mtime_ns
        rc = main([*args, "--experiments", "ce-efficientnet", "--set", "train.epochs=2"])
        assert rc == 2
        assert "holds a run with another config" in capsys.readouterr().err
        assert os.stat(run / "best.pt").st_mtime_ns == before
    finally:
        marker.write_text(saved)


def test_synthetic_dataset_is_reused_when_complete(tmp_path):
    from fr_lib.workflows.demo import ensure_synthetic_dataset, synth_marker
    from fr_lib.data.synth import generate_dataset

    root = tmp_path / "synth"
    first = ensure_synthetic_dataset(root, 3, 2, size=48, workers=0, progress=False)
    assert not first["reused"] and synth_marker(root).is_file()
    assert not any(p.is_file() for p in root.iterdir())   # nothing but identity folders inside
    mtime = (root / "id_00000" / "0000.jpg").stat().st_mtime_ns
    assert ensure_synthetic_dataset(root, 3, 2, size=48, workers=0, progress=False)["reused"]
    assert (root / "id_00000" / "0000.jpg").stat().st_mtime_ns == mtime
    # other parameters: generated again, deterministic, so the shared files are byte-identical
    data = (root / "id_00001" / "0001.jpg").read_bytes()
    assert not ensure_synthetic_dataset(root, 4, 2, size=48, workers=0, progress=False)["reused"]
    assert (root / "id_00001" / "0001.jpg").read_bytes() == data and (root / "id_00003").is_dir()
    # a larger `fr data synth` folder (no marker) holds the images asked for: reused as it is
    big = tmp_path / "big"
    generate_dataset(big, 3, 3, size=48, workers=0)
    assert ensure_synthetic_dataset(big, 2, 2, size=48, workers=0, progress=False)["reused"]


def test_training_summary_uses_the_one_best_epoch_rule():
    from fr_lib.training.log import best_epoch
    from fr_lib.workflows.demo import training_summary

    nan = float("nan")
    history = [{"epoch": 0, "val_loss": 0.1, "train_loss": 9.0},          # eval_at_start row: never the best
               {"epoch": 1, "val_loss": 2.0, "train_loss": 3.0, "val_accuracy": 0.2, "tpr@fpr=0.01": 0.1,
                "train_images_per_s": 10.0, "epoch_seconds": 4.0},
               {"epoch": 2, "val_loss": nan, "train_loss": 1.5, "val_accuracy": nan, "tpr@fpr=0.01": 0.3,
                "train_images_per_s": 30.0, "epoch_seconds": 6.0},
               {"epoch": 3, "val_loss": 1.8, "train_loss": 1.0, "val_accuracy": 0.4, "tpr@fpr=0.01": 0.2,
                "train_images_per_s": nan, "epoch_seconds": 5.0}]
    s = training_summary(history)
    assert s["best_epoch"] == best_epoch(history) == 2                  # ranked row by row: train loss 1.5
    assert (s["epochs"], s["open_set_tpr"], s["train_images_per_s"], s["train_seconds"]) == (3, 0.3, 20.0, 15.0)
    assert training_summary([{"epoch": 0, "val_loss": 1.0}]) == {}
