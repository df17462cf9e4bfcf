"""With a model trained in the test on synthetic identities: `fr compare` and Gallery.identify answer correctly on
held-out images of enrolled identities and say 'Unknown' for identities never enrolled, at the stored threshold."""
from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pytest
from _recognition_utils import EXPERIMENT, N_ENROLLED, TRAIN_IMAGES, trained_experiment

from fr_lib.cli import main
from fr_lib.recognition.gallery import UNKNOWN, Gallery
from fr_lib.recognition.pipeline import FacePipeline


@pytest.fixture(scope="module")
def trained(synth_root, tmp_path_factory):
    return trained_experiment(synth_root, tmp_path_factory.mktemp("recognition") / "runs")


@pytest.fixture
def runs(trained, monkeypatch):
    import config

    monkeypatch.setattr(config, "RUNS_DIR", trained["runs_dir"])
    return trained


def _held_out(synth_root, identity):
    return sorted((synth_root / identity).iterdir())[TRAIN_IMAGES:]


def _compare(capsys, *argv):
    code = main(["compare", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_compare_cli_at_the_stored_threshold(runs, synth_root, capsys):
    pipeline = FacePipeline.from_experiment(runs["checkpoint"])
    stored = json.loads((runs["checkpoint"].parent / "threshold.json").read_text())
    assert stored["fpr"] == 0.01 and stored["threshold"] == pytest.approx(runs["threshold"])
    same = [pair for identity in runs["ids"] for pair in combinations(_held_out(synth_root, identity), 2)]
    different = [(_held_out(synth_root, a)[0], _held_out(synth_root, b)[0])
                 for a, b in zip(runs["ids"], runs["ids"][1:])]
    verdicts = {}
    for label, pairs in (("SAME", same), ("DIFFERENT", different)):
        emb = [pipeline.embed_crops([str(a), str(b)]) for a, b in pairs]
        sims = np.array([float(e[0] @ e[1]) for e in emb])
        verdicts[label] = np.where(sims > stored["threshold"], "SAME", "DIFFERENT")
        # the CLI on one pair of each kind prints exactly this similarity, the stored threshold and the verdict
        code, out, _ = _compare(capsys, *pairs[0], "--experiment", EXPERIMENT, "--aligned", "--device", "cpu")
        assert code == 0
        lines = out.splitlines()
        assert float(lines[0].split()[1]) == pytest.approx(sims[0], abs=1e-4)
        assert float(lines[1].split()[1]) == pytest.approx(stored["threshold"], abs=1e-4)
        assert "FPR=0.01" in lines[1] and lines[2] == verdicts[label][0]
    # held-out pairs of different identities are DIFFERENT (the threshold is set for FPR = 0.01); pairs of the same
    # identity are SAME at the rate the evaluation measured (TPR at that threshold, over these very pairs): a model
    # this small verifies single pairs poorly (TPR ~0.4) but identifies against several enrolled photos well (below)
    assert (verdicts["DIFFERENT"] == "DIFFERENT").mean() >= 0.9
    assert (verdicts["SAME"] == "SAME").mean() == pytest.approx(stored["tpr"], abs=1e-9)
    assert stored["tpr"] > 0.2
    # --threshold overrides the stored one
    code, out, _ = _compare(capsys, *same[0], "--experiment", EXPERIMENT, "--aligned", "--threshold", "1.5")
    assert out.splitlines()[-1] == "DIFFERENT" and "--threshold" in out


def test_identify_held_out_and_unknown(runs, synth_root, tmp_path):
    pipeline = FacePipeline.from_experiment(runs["checkpoint"])
    gallery = Gallery(tmp_path / "g.sqlite", pipeline, threshold=runs["threshold"], aggregation="max")
    enrolled, never = runs["ids"][:N_ENROLLED], runs["ids"][N_ENROLLED:]
    for identity in enrolled:
        gallery.add_person(identity, f"Person {identity}", pipeline.embed_crops(
            [str(f) for f in sorted((synth_root / identity).iterdir())[:TRAIN_IMAGES]]))
    matrix, person_ids, _ = gallery.embeddings()
    known_correct, unknown_rejected = [], []
    queries = [(identity, f) for identity in enrolled + never for f in _held_out(synth_root, identity)]
    reference = pipeline.embed_crops([str(f) for _, f in queries])
    for (identity, f), embedding in zip(queries, reference):
        (answer,) = gallery.identify(f, policy="aligned")
        # the answer is the nearest enrolled face, accepted only above the stored threshold
        sims = matrix @ embedding
        assert answer.similarity == pytest.approx(float(sims.max()), abs=1e-5)
        expected = person_ids[int(sims.argmax())] if sims.max() > runs["threshold"] else None
        assert answer.person_id == expected
        if identity in enrolled:
            known_correct.append(answer.person_id == identity and answer.name == f"Person {identity}")
        else:
            unknown_rejected.append(answer.name == UNKNOWN)
    assert np.mean(known_correct) >= 0.75, known_correct
    assert np.mean(unknown_rejected) >= 0.75, unknown_rejected


def test_compare_clear_errors(runs, synth_root, tmp_path, capsys, monkeypatch):
    import config

    a, b = _held_out(synth_root, runs["ids"][0])[:2]
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("RGB", (120, 120), (128, 128, 128)).save(blank)
    code, _, err = _compare(capsys, blank, a, "--experiment", EXPERIMENT)
    assert code == 2 and f"no face found in {blank}" in err
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff not a photo")
    code, _, err = _compare(capsys, corrupt, a, "--experiment", EXPERIMENT, "--aligned")
    assert code == 2 and "cannot read" in err and "corrupt.jpg" in err
    code, _, err = _compare(capsys, tmp_path / "missing.jpg", a, "--experiment", EXPERIMENT)
    assert code == 2 and "does not exist" in err
    # no threshold.json: say how to get one
    empty_runs = tmp_path / "runs"
    (empty_runs / EXPERIMENT).mkdir(parents=True)
    (empty_runs / EXPERIMENT / "best.pt").write_bytes(runs["checkpoint"].read_bytes())
    monkeypatch.setattr(config, "RUNS_DIR", empty_runs)
    code, _, err = _compare(capsys, a, b, "--experiment", EXPERIMENT, "--aligned")
    assert code == 2 and "run `fr eval" in err and "--threshold" in err
    code, _, err = _compare(capsys, a, b, "--experiment", "ce-efficientnet", "--aligned")
    assert code == 2 and "no checkpoint" in err and "fr train" in err
    code, _, err = _compare(capsys, a, b, "--experiment", "no-such-run", "--aligned")
    assert code == 2 and "unknown experiment" in err
