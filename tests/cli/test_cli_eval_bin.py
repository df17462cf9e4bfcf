"""`fr eval --bin`: the verification table of .bin sets (names in --data or paths), equal to verify_bin per model;
bad input exits 2 with one line."""
import json
import os
import pickle

import pandas as pd
import pytest

from fr_lib.cli import main
from fr_lib.data.bin_sets import write_bin_from_folder
from fr_lib.embedders.resolve import resolve_embedder
from fr_lib.evaluation.bin_verification import verify_bin

MODELS = ["random-mobilenetv3_small_100@64", "random-resnet18@64"]


@pytest.fixture(scope="module")
def bin_dir(synth_root, tmp_path_factory):
    d = tmp_path_factory.mktemp("bins")
    write_bin_from_folder(synth_root, d / "lfw.bin", n_pairs=20, seed=0)
    write_bin_from_folder(synth_root, d / "cfp_fp.bin", n_pairs=20, seed=1)
    return d


def test_bin_table_matches_verify_bin(bin_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["eval", "--experiments", ",".join(MODELS), "--bin", f"lfw,{bin_dir / 'cfp_fp.bin'}",
               "--data", str(bin_dir), "--out", str(out), "--device", "cpu"])
    assert rc == 0
    df = pd.read_csv(out / "bin_verification.csv", index_col=0)
    assert list(df.index) == MODELS and list(df.columns) == ["lfw", "cfp_fp"]
    report = json.loads((out / "bin_verification.json").read_text())
    for name in MODELS:
        model, meta = resolve_embedder(name)
        for s in ("lfw", "cfp_fp"):
            res = verify_bin(model, meta, bin_dir / f"{s}.bin", progress=False)
            assert df.loc[name, s] == pytest.approx(100 * res.accuracy)
            assert report["models"][name][s]["roc_auc"] == pytest.approx(res.roc_auc)
            assert report["models"][name][s]["n_pairs"] == 20
    md = (out / "bin_verification.md").read_text()
    assert md.count("**") >= 2 * 2                                   # a bold best in both columns
    assert md in capsys.readouterr().out
    assert (out / "bin_verification.html").is_file()


def test_bin_bad_input_exits_2_with_one_line(bin_dir, tmp_path, capsys):
    def run(*argv):
        rc = main(["eval", *argv, "--out", str(tmp_path / "o"), "--device", "cpu"])
        err = capsys.readouterr().err.strip()
        return rc, err

    rc, err = run("--experiments", MODELS[0], "--bin", "calfw", "--data", str(bin_dir))
    assert rc == 2 and "'calfw' not found" in err and len(err.splitlines()) == 1
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "evil.bin").write_bytes(pickle.dumps(([Evil(), b"x"], [True])))
    rc, err = run("--experiments", MODELS[0], "--bin", str(tmp_path / "evil.bin"))
    assert rc == 2 and "evil.bin" in err and "refused pickle global" in err and len(err.splitlines()) == 1
    assert not marker.exists()
    rc, err = run("--embeddings", str(tmp_path / "x.npz"), "--bin", "lfw")
    assert rc == 2 and "--bin needs --experiments" in err
