"""The training notebooks and id_rate.ipynb execute top to bottom with papermill on the 'tiny' preset, on a tiny
synthetic dataset; their tables agree with the numbers they write. Kept few and tiny: each kernel start plus
``import torch`` costs seconds."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAINING = {"ce-loss": "ce-efficientnet", "triplet-loss": "triplet-efficientnet",
            "arcface-loss": "arcface-efficientnet"}
ID_RATE = ROOT / "id_rate" / "id_rate.ipynb"
# tiny runs: 64 px EfficientNet, at most 6 images of each of the fixture's 16 identities
TINY = {"data.image_size": 64, "data.max_images_per_identity": 6, "data.batch_size": 8}


def _execute(path: Path, out: Path, cwd: Path, parameters: dict):
    nbformat = pytest.importorskip("nbformat")
    papermill = pytest.importorskip("papermill")
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: papermill needs exactly one cell tagged 'parameters'"
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name}: commit without outputs"
    papermill.execute_notebook(str(path), str(out), parameters=parameters, kernel_name="python3", cwd=str(cwd),
                               progress_bar=False)
    return nbformat.read(out, as_version=4)


def _text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            parts.append(o.get("text", ""))
            parts.append(o.get("data", {}).get("text/markdown", ""))
            parts.append(o.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("nb-runs")


@pytest.mark.parametrize("folder", list(TRAINING))
def test_training_notebook_runs_on_the_tiny_preset(folder, synth_root, runs_dir, tmp_path):
    experiment = TRAINING[folder]
    nb = _execute(ROOT / "notebooks" / folder / f"{folder}.ipynb", tmp_path / "out.ipynb", tmp_path,
                  {"experiment": experiment, "preset": "tiny", "data_root": str(synth_root), "epochs": 1,
                   "device": "cpu", "runs_dir": str(runs_dir), "overrides": TINY})
    run = runs_dir / experiment
    assert (run / "best.pt").is_file() and (run / "metrics.csv").is_file()
    figures = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    # training curves, the loss's own view (CE: logits and the scale curve), similarity distributions
    assert len(figures) == (4 if folder == "ce-loss" else 3)
    text = _text(nb)
    assert "| model | TPR@FPR=0.5 |" in text and "best epoch 1" in text
    assert f"evaluating {run / 'last.pt'}" in text            # the demo's checkpoint
    if experiment.startswith("triplet"):
        assert "val accuracy nan" in text                     # no classifier: no closed-set accuracy
        assert "active share" in text and "random weights" in text
    else:
        assert "val accuracy 0." in text or "val accuracy 1." in text
    if folder == "arcface-loss":
        assert "s = 64, m = 0.5 rad = 28.6 deg" in text and "margin satisfied" in text
    if folder == "ce-loss":
        assert "accuracy" in text and "scale" in text


def test_id_rate_notebook_compares_runs_and_baselines(synth_root, runs_dir, tmp_path):
    if not (runs_dir / "ce-efficientnet" / "best.pt").is_file():   # run alone (-k): train one tiny run here
        import config
        from fr_lib.training.loop import train
        train(config.get_experiment("ce-efficientnet", "tiny", **TINY, **{
            "data.root": str(synth_root), "train.device": "cpu",
            "train.output_dir": str(runs_dir / "ce-efficientnet")}), progress=False)
    trained = sorted(p.parent.name for p in runs_dir.glob("*/last.pt"))    # the default checkpoint
    out = tmp_path / "id_rate"
    # no facenet baseline: it would download weights where a network is reachable
    nb = _execute(ID_RATE, tmp_path / "out.ipynb", tmp_path,
                  {"runs_dir": str(runs_dir), "device": "cpu", "out_dir": str(out),
                   "baselines": ["random-inception_resnet_v1"]})
    for name in ("table.md", "table.csv", "table.html", "results.json", "roc_curves.png",
                 "similarity_distributions.png"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "results.json").read_text())
    models = doc["models"]
    assert len(models) == len(trained) + 1 and "InceptionResnetV1 with random weights" in models
    assert doc["notes"]["evaluated checkpoint"] == "last"
    assert {Path(m["source"]).name for m in models.values() if m["kind"] == "checkpoint"} == {"last.pt"}
    # the displayed table is the written one, and its numbers are results.json's
    table = (out / "table.md").read_text()
    assert table in _text(nb)
    for name, m in models.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        cells = [c.strip().split(" [")[0].strip("*") for c in row.strip("|").split("|")][1:]   # "0.343 [lo, hi]"
        expected = list(m["tpr_at_fpr"].values()) + [m["roc_auc"]]
        assert [float(c) for c in cells] == pytest.approx([round(v, 3) for v in expected], abs=1e-9)
    assert "The published comparison table" in _text(nb)      # reference table shown beside ours
