"""fr_lib.evaluation.held_out and fr_lib.evaluation.thresholds on the synthetic identity folders: the split is the
one training uses, embeddings are the model's on exactly the held-out images, evaluate_models' numbers are the
ID-rate protocol's, skips carry their reason, and write_report writes the documented results.json schema."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fr_lib.evaluation.held_out import (FPRS, SCHEMA, HeldOutEmbeddings, embed_held_out, eval_transform,
                                        evaluate_models, folder_split, held_out_split, select_fprs,
                                        split_differences, write_report)
from fr_lib.evaluation.metrics import identification_rate


class MeanColour(nn.Module):
    """A known embedding model: unit (B, 12) from the mean of each channel over a 2x2 grid, minus 0.5."""
    normalization, default_image_size, embedding_size = "unit", 32, 12

    def forward(self, x):
        q = nn.functional.adaptive_avg_pool2d(x, 2).reshape(x.shape[0], -1) - 0.5
        return nn.functional.normalize(q, dim=1)


META = {"name": "mean-colour", "kind": "random", "normalization": "unit", "image_size": 32}


def _data(root, **kw):
    fields = {"root": str(root), "min_images_per_identity": 1, "max_images_per_identity": 6, "max_identities": None,
              "eval_identity_fraction": 0.5, "distractor_fraction": 0.5, "val_fraction": 0.2, "seed": 0,
              "image_size": 32, "augment": False, "packed_cache": False, "batch_augment": False, **kw}
    return SimpleNamespace(**fields)


def test_split_is_the_training_split_and_the_reference_one(synth_root):
    from fr_lib.data import closed_set_split, open_set_split, scan_folder
    from fr_lib.training.data import build_training_data

    cfg = _data(synth_root)
    split = held_out_split(cfg)
    index = scan_folder(synth_root, min_images_per_identity=1, max_images_per_identity=6)
    ref = open_set_split(index, 0.5, 0.5, 0)
    train, val = closed_set_split(ref.train, 0.2, 0)
    assert (split.query, split.distractors, split.train, split.val) == (ref.query, ref.distractors, train, val)
    assert split.query_classes == ref.query_classes and len(split.held_out_classes) == 8
    assert held_out_split(vars(cfg)).query == split.query            # the dict form (a checkpoint's config)
    data = build_training_data(cfg, "imagenet")
    assert data.open_set.samples == split.query + split.distractors and data.n_query == len(split.query)
    assert data.train.samples == split.train and data.val.samples == split.val
    described = split.describe()
    assert (described["query_images"], described["distractor_identities"]) == (len(split.query), 4)


def test_split_differences():
    a = _data("/x")
    assert split_differences(a, _data("/x")) == []
    assert split_differences(a, _data("/y", seed=3)) == ["root: '/x' -> '/y'", "seed: 0 -> 3"]
    assert split_differences(a, vars(_data("/y")), ignore=("root",)) == []
    assert split_differences(a, _data("/x", image_size=64)) == []   # the input size does not move identities


def test_embed_held_out_is_the_model_on_exactly_the_held_out_images(synth_root, tmp_path):
    from PIL import Image

    split = held_out_split(_data(synth_root))
    emb = embed_held_out(MeanColour(), META, split, cache_dir=tmp_path, cache_name="mean colour", progress=False)
    tf = eval_transform("unit", 32)
    for rows, labels, samples in ((emb.query, emb.query_labels, split.query),
                                  (emb.distractors, emb.distractor_labels, split.distractors)):
        x = torch.stack([tf(Image.open(synth_root / p).convert("RGB")) for p, _ in samples])
        np.testing.assert_allclose(rows, MeanColour()(x).numpy(), atol=1e-6)
        assert labels.tolist() == [lab for _, lab in samples]
    assert not set(emb.query_labels) & set(emb.distractor_labels)       # identity ids of two disjoint sets
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mean_colour-distractors.npz", "mean_colour-query.npz"]
    again = embed_held_out(MeanColour(), META, split, cache_dir=tmp_path, cache_name="mean colour", progress=False)
    np.testing.assert_array_equal(again.query, emb.query)
    with pytest.raises(ValueError, match="no held-out query identities"):
        embed_held_out(MeanColour(), META, held_out_split(_data(synth_root, eval_identity_fraction=0.0)))


def test_eval_transform():
    from PIL import Image

    img = Image.fromarray(np.arange(48 * 48 * 3, dtype=np.uint8).reshape(48, 48, 3))
    x = eval_transform("unit", 48)(img)
    np.testing.assert_allclose(x.numpy(), np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0, atol=1e-7)
    with pytest.raises(ValueError, match="unknown normalization"):
        eval_transform("nope", 32)


def test_folder_split_keeps_query_and_distractor_identities_apart(synth_root, tmp_path):
    ids = sorted(p.name for p in synth_root.iterdir())
    for folder, names in (("q", ids[:2]), ("d", ids[2:5]), ("both", ids[1:3])):
        for n in names:
            (tmp_path / folder).mkdir(exist_ok=True)
            (tmp_path / folder / n).symlink_to(synth_root / n, target_is_directory=True)
    split = folder_split(tmp_path / "q", tmp_path / "d")
    assert {lab for _, lab in split.query} == {0, 1} and {lab for _, lab in split.distractors} == {2, 3, 4}
    emb = embed_held_out(MeanColour(), META, split, progress=False)
    assert len(emb.query) == 20 and len(emb.distractors) == 30
    with pytest.raises(ValueError, match="share identities"):
        folder_split(tmp_path / "q", tmp_path / "both")


def _fake_embeddings(seed, noise):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((30, 8))
    q_lab, d_lab = np.repeat(np.arange(10), 3), np.repeat(np.arange(10, 30), 2)
    q = centres[q_lab] + noise * rng.standard_normal((30, 8))
    d = centres[d_lab] + noise * rng.standard_normal((40, 8))
    unit = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return HeldOutEmbeddings(unit(q), q_lab, unit(d), d_lab)


def test_evaluate_models_numbers_skips_and_notes(synth_root):
    split = held_out_split(_data(synth_root))
    pre = _fake_embeddings(0, 0.5)
    other_split = {"config": {"data": vars(_data("/elsewhere", seed=5))}}
    seen = []

    def resolve(source, device):
        if source == "not-installed":
            raise ImportError("needs an extra: pip install 'fr_lib[x]'\nsecond line")
        if source == "other-split":
            return MeanColour(), {**META, "kind": "checkpoint", **other_split}
        return MeanColour(), {**META, "image_size": 40}

    ev = evaluate_models({"pre": pre, "model": (MeanColour(), META), "other": "other-split"}, split,
                         baselines={"base": "random-x", "missing": "not-installed"}, resolve=resolve,
                         per_model=lambda name, model, meta: seen.append(name), progress=False)
    assert list(ev.results) == ["pre", "model", "base"] and seen == ["model", "base"]
    r = identification_rate(*pre.as_tuple(), fprs=FPRS)
    np.testing.assert_array_equal(ev.results["pre"].tprs, r.tprs)
    direct = embed_held_out(MeanColour(), META, split, progress=False)
    np.testing.assert_array_equal(ev.embeddings["model"].query, direct.query)
    np.testing.assert_array_equal(ev.results["model"].tprs, identification_rate(*direct.as_tuple()).tprs)
    assert ev.embeddings["base"].query.shape == direct.query.shape   # embedded at its meta's 40 px
    assert ev.skipped == {"missing": "needs an extra: pip install 'fr_lib[x]'",
                          "other": ev.skipped["other"]}
    assert "seed: 0 -> 5" in ev.skipped["other"] and "root" not in ev.skipped["other"]
    assert ev.notes["base"] == "random baseline at 40 px" and ev.sources["base"]["source"] == "random-x"
    with pytest.raises(ValueError, match="needs a held-out split"):
        evaluate_models({"m": (MeanColour(), META)}, None, progress=False)


def test_write_report_schema_and_table(tmp_path):
    embs = {"good": _fake_embeddings(1, 0.3), "bad": _fake_embeddings(2, 3.0)}
    results = {n: identification_rate(*e.as_tuple(), fprs=FPRS) for n, e in embs.items()}
    notes = {"evaluated checkpoint": "last", "dlib": "skipped: not installed"}
    paths = write_report(tmp_path, results, embs, notes, training={"good": {"epochs": 3}},
                         sources={"good": {"source": "runs/x/last.pt", "kind": "checkpoint", "image_size": 64}})
    assert sorted(paths) == sorted(["table.md", "table.csv", "table.html", "results.json", "roc_curves.png",
                                    "similarity_distributions.png"])
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["schema"] == SCHEMA and doc["skipped"] == {"dlib": "not installed"} and doc["notes"] == notes
    assert doc["training"] == {"good": {"epochs": 3}} and doc["split"] == {}
    good = doc["models"]["good"]
    assert set(good) == {"tpr_at_fpr", "thresholds", "roc_auc", "roc_auc_max_error", "n_positives", "n_negatives",
                         "n_query", "n_distractors", "n_query_identities", "n_distractor_identities", "source",
                         "kind", "image_size", "intervals"}
    assert (good["n_query"], good["n_distractors"], good["n_query_identities"], good["n_distractor_identities"],
            good["n_positives"], good["source"]) == (30, 40, 10, 20, 30, "runs/x/last.pt")
    assert list(good["tpr_at_fpr"]) == ["0.5", "0.25", "0.1", "0.05", "0.01", "0.005", "0.001"]
    table = pd.read_csv(tmp_path / "table.csv", index_col=0)
    assert list(table.index) == ["good", "bad"]
    points = [c for c in table.columns if not c.endswith(("_lo", "_hi"))]   # then each column's bootstrap bounds
    for name, r in results.items():
        assert list(table.loc[name, points]) == pytest.approx(list(r.tprs) + [r.roc_auc], abs=1e-12)
        iv = doc["models"][name]["intervals"]
        assert iv["n_resamples"] == 200 and iv["unit"] == "identity"
        lo, hi = iv["intervals"]["ROC-AUC"]
        assert lo <= r.roc_auc <= hi and (table.loc[name, "ROC-AUC_lo"], table.loc[name, "ROC-AUC_hi"]) == (lo, hi)
        assert list(doc["models"][name]["thresholds"].values()) == pytest.approx(list(r.thresholds))
    with pytest.raises(ValueError, match="no model could be evaluated"):
        write_report(tmp_path / "none", {}, {}, notes)


def test_select_fprs():
    e = _fake_embeddings(3, 0.5)
    full = identification_rate(*e.as_tuple(), fprs=(0.5, 0.1, 0.01))
    sub = select_fprs(full, [0.5, 0.1])
    alone = identification_rate(*e.as_tuple(), fprs=(0.5, 0.1))
    np.testing.assert_array_equal(sub.tprs, alone.tprs)
    np.testing.assert_array_equal(sub.thresholds, alone.thresholds)
    assert sub.roc_auc == full.roc_auc


def test_threshold_file_round_trip(tmp_path):
    from fr_lib.evaluation.thresholds import read_threshold, threshold_path, write_threshold

    e = _fake_embeddings(4, 0.5)
    r = identification_rate(*e.as_tuple(), fprs=(0.1, 0.01))
    ckpt = tmp_path / "run" / "best.pt"
    ckpt.parent.mkdir()
    with pytest.raises(FileNotFoundError, match="run `fr eval`"):
        read_threshold(ckpt)
    assert write_threshold(ckpt, r, 8, "synth") == threshold_path(ckpt) == tmp_path / "run" / "threshold.json"
    info = read_threshold(ckpt)
    assert info["threshold"] == float(r.thresholds[1]) and info["fpr"] == 0.01 and info["tpr"] == float(r.tprs[1])
    assert (info["embedding_size"], info["checkpoint"], info["evaluated_on"]) == (8, "best.pt", "synth")
    with pytest.raises(ValueError, match="no threshold at FPR=0.05"):
        write_threshold(ckpt, r, 8, "synth", fpr=0.05)
    threshold_path(ckpt).write_text('{"fpr": 0.01}')
    with pytest.raises(ValueError, match="not a valid threshold file"):
        read_threshold(ckpt)
