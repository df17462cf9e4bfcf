"""Voters: mean / max / centroid aggregation over a person's photos, in the pure functions, the Gallery, `fr compare
PROBE PERSON_DIR/` (with cosine and with a trained pair-classifier head) and the REST /match."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _recognition_utils import tiny_pipeline, unit

from fr_lib.recognition.gallery import UNKNOWN, Gallery
from fr_lib.recognition.voting import AGGREGATIONS, DEFAULT_AGGREGATION, group_faces, person_scores, vote


def _unit_rows(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_person_scores_match_brute_force():
    rng = np.random.default_rng(0)
    owners = np.array([2, 0, 1, 2, 2, 0, 1, 1, 1])          # uneven counts, interleaved
    faces = _unit_rows(rng.normal(size=(9, 5))).astype(np.float32)
    queries = _unit_rows(rng.normal(size=(4, 5))).astype(np.float32)
    groups = group_faces(faces, owners, 3)
    for aggregation in AGGREGATIONS:
        got = person_scores(queries, faces, groups, aggregation)
        for p in range(3):
            mine = faces[owners == p].astype(np.float64)
            cos = queries @ mine.T
            want = {"mean": cos.mean(1), "max": cos.max(1),
                    "centroid": queries @ (mine.mean(0) / np.linalg.norm(mine.mean(0)))}[aggregation]
            np.testing.assert_allclose(got[:, p], want, atol=1e-6)
    with pytest.raises(ValueError, match="aggregation"):
        person_scores(queries, faces, groups, "median")
    with pytest.raises(ValueError, match="no face"):
        group_faces(faces, owners, 4)


def test_vote_reports_each_voter_and_the_aggregate():
    probe = unit([1, 0, 0])
    photos = np.stack([unit([1, 0.2, 0]), unit([0, 1, 0]), unit([1, 0, 0.5])])
    v = vote(probe, photos, "mean")
    np.testing.assert_allclose(v.scores, photos @ probe, atol=1e-6)
    assert v.score == pytest.approx(float((photos @ probe).mean()), abs=1e-6) and v.aggregation == "mean"
    assert vote(probe, photos, "max").score == pytest.approx(float((photos @ probe).max()), abs=1e-6)
    # any similarity works, e.g. a negative squared distance
    neg_d2 = vote(probe, photos, "max", score=lambda a, b: -((a[:, None] - b[None]) ** 2).sum(-1))
    assert neg_d2.score == pytest.approx(-float(((photos - probe) ** 2).sum(1).min()), abs=1e-6)
    with pytest.raises(ValueError, match="no enrolled photo"):
        vote(probe, np.zeros((0, 3)))


def _gallery(aggregation=DEFAULT_AGGREGATION):
    g = Gallery(":memory:", model_name="t", embedding_size=3, threshold=0.5, aggregation=aggregation)
    # A: one photo very close to the probe, two far away; B: three photos all fairly close
    g.add_person("A", "Ann", np.stack([unit([1, 0.05, 0]), unit([0, 1, 0]), unit([0, 0, 1])]))
    g.add_person("B", "Bob", np.stack([unit([1, 0.5, 0]), unit([1, 0, 0.5]), unit([1, 0.4, 0.3])]))
    return g


def test_gallery_aggregations_disagree_as_they_should():
    probe = unit([1, 0, 0])[None]
    g = _gallery()
    assert g.aggregation == DEFAULT_AGGREGATION
    best = {a: g.search(probe, aggregation=a)[0] for a in AGGREGATIONS}
    assert best["max"].person_id == "A" and best["max"].similarity == pytest.approx(float(unit([1, 0.05, 0])[0]),
                                                                                     abs=1e-6)
    assert best["mean"].person_id == "B" and best["centroid"].person_id == "B"
    b_faces = np.stack([unit([1, 0.5, 0]), unit([1, 0, 0.5]), unit([1, 0.4, 0.3])])
    assert best["mean"].similarity == pytest.approx(float((b_faces @ probe[0]).mean()), abs=1e-6)
    assert all(m.aggregation == a for a, m in best.items())
    # the threshold applies to the aggregate: A's mean (~0.33) is rejected even though one photo matches
    only_a = Gallery(":memory:", model_name="t", embedding_size=3, threshold=0.5, aggregation="mean")
    only_a.add_person("A", "Ann", np.stack([unit([1, 0.05, 0]), unit([0, 1, 0]), unit([0, 0, 1])]))
    m = only_a.search(probe)[0]
    assert m.name == UNKNOWN and m.best_person_id == "A" and m.similarity < 0.5
    assert only_a.search(probe, aggregation="max")[0].person_id == "A"
    with pytest.raises(ValueError, match="aggregation"):
        Gallery(":memory:", model_name="t", embedding_size=3, aggregation="vote")


def test_gallery_groups_follow_enrollment():
    g = _gallery("mean")
    probe = unit([0, 0, 1])[None]
    assert g.search(probe)[0].person_id is None           # nobody's mean is above 0.5 for this probe
    g.add_person("C", "Cy", np.stack([unit([0, 0.1, 1]), unit([0.1, 0, 1])]))
    m = g.search(probe)[0]
    assert m.person_id == "C" and m.name == "Cy"
    g.remove("C")
    assert g.search(probe)[0].best_person_id != "C"


def _aligned_faces(synth_root, identity, n):
    return sorted((synth_root / identity).iterdir())[:n]


def test_compare_person_dir_prints_each_voter_and_the_aggregate(synth_root, tmp_path, capsys, monkeypatch):
    from fr_lib.cli import compare, main

    pipeline = tiny_pipeline()
    monkeypatch.setattr(compare, "load_pipeline", lambda args: (pipeline, 0.5, "test"))
    ident = sorted(p.name for p in synth_root.iterdir() if p.is_dir())[0]
    photos = _aligned_faces(synth_root, ident, 4)
    person = tmp_path / "person"
    person.mkdir()
    for p in photos[1:]:
        (person / p.name).write_bytes(p.read_bytes())
    (person / "broken.jpg").write_bytes(b"not an image")
    (person / "notes.txt").write_text("ignored: not an image suffix")
    emb = pipeline.embed_crops([str(p) for p in photos])
    per_photo = emb[1:] @ emb[0]
    for aggregation, want in (("mean", per_photo.mean()), ("max", per_photo.max()),
                              ("centroid", float(emb[0] @ (emb[1:].sum(0) / np.linalg.norm(emb[1:].sum(0)))))):
        code = main(["compare", str(photos[0]), str(person), "--aligned", "--aggregation", aggregation,
                     "--experiment", "x"])
        out = capsys.readouterr().out
        assert code == 0, out
        lines = out.splitlines()
        assert lines[0].startswith("voters: 3 photo(s)") and "(cosine)" in lines[0]
        voters = [(float(line.split()[0]), line.split()[1]) for line in lines[1:4]]
        assert [name for _, name in voters] == [p.name for p in photos[1:]]
        np.testing.assert_allclose([s for s, _ in voters], per_photo, atol=1e-4)
        assert lines[4].startswith("skipped 1: broken.jpg")
        assert lines[5].startswith("similarity:") and f"aggregation {aggregation} of 3" in lines[5]
        assert float(lines[5].split()[1]) == pytest.approx(float(want), abs=1e-4)
        assert lines[-1] == ("SAME" if want > 0.5 else "DIFFERENT")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["compare", str(photos[0]), str(empty), "--aligned", "--experiment", "x"]) == 2
    assert "holds no photo" in capsys.readouterr().err


def test_compare_scores_with_the_trained_pair_head(synth_root, tmp_path, capsys, monkeypatch):
    from fr_lib.cli import compare, main
    from fr_lib.losses.pair_classifier import PairClassifierLoss
    from fr_lib.training.checkpoint import save_checkpoint

    pipeline = tiny_pipeline()
    monkeypatch.setattr(compare, "load_pipeline", lambda args: (pipeline, args.threshold, "test"))
    head = PairClassifierLoss(16)
    with torch.no_grad():
        head.head.weight.copy_(torch.linspace(-2, -0.5, 16)[None])
        head.head.bias.fill_(1.5)
    ckpt = tmp_path / "bce" / "best.pt"
    save_checkpoint(ckpt, {"model": {}, "criterion": head.state_dict(),
                           "config": {"loss": {"name": "bce"}, "model": {"embedding_size": 16}}})
    ident = sorted(p.name for p in synth_root.iterdir() if p.is_dir())[1]
    a, b = _aligned_faces(synth_root, ident, 2)
    emb = torch.from_numpy(pipeline.embed_crops([str(a), str(b)]))
    with torch.no_grad():
        want = float(torch.sigmoid(head.head(torch.abs(emb[0] - emb[1]))))
    assert main(["compare", str(a), str(b), "--aligned", "--checkpoint", str(ckpt), "--score",
                 "pair-probability"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert float(lines[0].split()[1]) == pytest.approx(want, abs=1e-4) and "(pair-probability)" in lines[0]
    assert "0.5000 (P(same) > 0.5)" in lines[1]
    # a run trained with another loss has no head: one clear line, exit 2
    other = tmp_path / "ce" / "best.pt"
    save_checkpoint(other, {"model": {}, "criterion": {}, "config": {"loss": {"name": "ce"},
                                                                     "model": {"embedding_size": 16}}})
    assert main(["compare", str(a), str(b), "--aligned", "--checkpoint", str(other), "--score",
                 "pair-probability"]) == 2
    assert "not 'bce'" in capsys.readouterr().err


def test_match_answers_with_the_aggregation(monkeypatch):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from fr_lib.recognition.serve import create_app

    g = _gallery("mean")
    client = TestClient(create_app(None, g, token="write-token-123"))
    auth = {"Authorization": "Bearer write-token-123"}
    probe = [float(v) for v in unit([1, 0, 0])]
    r = client.post("/match", json={"embedding": probe}, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["aggregation"] == "mean" and r.json()["match"]["person_id"] == "B"
    r = client.post("/match", json={"embedding": probe, "aggregation": "max"}, headers=auth)
    assert r.json()["aggregation"] == "max" and r.json()["match"]["person_id"] == "A"
    assert client.post("/match", json={"embedding": probe, "aggregation": "vote"}, headers=auth).status_code == 422
