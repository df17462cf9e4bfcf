"""The CASIA-WebFace path as a user runs it, on the embedded synthetic pack (no download): `fr data synth --format
pack` -> `fr data stats` -> `fr train --data PACK` (per-epoch verification on the .bin beside the pack) ->
`fr eval --bin` on the trained checkpoint, whose accuracy equals the one logged for its epoch."""
from __future__ import annotations

import csv

import pandas as pd
import pytest

from fr_lib.cli import main


def test_pack_train_bin_eval(tmp_path, capsys):
    pack, run, out = tmp_path / "casia-like", tmp_path / "run", tmp_path / "eval"
    assert main(["data", "synth", str(pack), "--format", "pack", "--identities", "14", "--images-per-identity",
                 "6", "--size", "112", "--bin-pairs", "20", "--workers", "0"]) == 0
    assert {"train.rec", "train.idx", "property", "synth.bin"} <= {p.name for p in pack.iterdir()}
    capsys.readouterr()
    assert main(["data", "stats", str(pack)]) == 0
    stats = capsys.readouterr().out
    assert "identities" in stats

    assert main(["train", "--experiment", "arcface-efficientnet", "--preset", "tiny", "--data", str(pack),
                 "--epochs", "1", "--device", "cpu", "--set", "model.backbone=resnet10t",
                 "--set", "data.image_size=64", "--set", f"train.output_dir={run}"]) == 0
    assert "synth acc" in capsys.readouterr().out            # the epoch summary line carries the .bin accuracy
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = float(rows[-1]["synth_accuracy"])
    assert 0.0 <= logged <= 1.0

    assert main(["eval", "--experiments", str(run / "last.pt"), "--bin", "synth", "--data", str(pack),
                 "--out", str(out), "--device", "cpu"]) == 0
    table = pd.read_csv(out / "bin_verification.csv", index_col=0)
    assert table["synth"].iloc[0] == pytest.approx(100 * logged, abs=1e-6)
