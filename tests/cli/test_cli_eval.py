"""`fr eval`: precomputed embeddings, a random baseline and a trained checkpoint on the synthetic split."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from fr_lib.cli import main
from fr_lib.evaluation.metrics import identification_rate

ARTEFACTS = ["table.md", "table.csv", "table.html", "results.json", "roc_curves.png", "similarity_distributions.png"]


def _npz(path, seed, noise):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.repeat(np.arange(15), 4), 100 + np.arange(40)]
    centres = rng.standard_normal((200, 16))
    emb = centres[labels] + noise * rng.standard_normal((100, 16))
    is_d = labels >= 100
    np.savez(path, embeddings=emb.astype(np.float32), labels=labels, is_distractor=is_d)
    return emb[~is_d], labels[~is_d], emb[is_d]


def test_embeddings_npz_writes_the_artefacts(tmp_path):
    good = _npz(tmp_path / "good.npz", 0, 0.5)
    bad = _npz(tmp_path / "bad.npz", 1, 3.0)
    out = tmp_path / "out"
    rc = main(["eval", "--embeddings", f"good={tmp_path / 'good.npz'},{tmp_path / 'bad.npz'}", "--out", str(out),
               "--fprs", "0.5,0.1,0.05"])
    assert rc == 0
    for name in ARTEFACTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    df = pd.read_csv(out / "table.csv", index_col=0)
    assert list(df.index) == ["good", "bad"]
    points = ["TPR@FPR=0.5", "TPR@FPR=0.1", "TPR@FPR=0.05", "ROC-AUC"]   # each followed by its bootstrap bounds
    assert list(df.columns) == [c + s for c in points for s in ("", "_lo", "_hi")]
    for name, (q, labels, d) in (("good", good), ("bad", bad)):
        r = identification_rate(q, labels, d, [0.5, 0.1, 0.05])
        np.testing.assert_allclose(df.loc[name, points].values, np.r_[r.tprs, r.roc_auc], rtol=1e-12)
    md = (out / "table.md").read_text()
    assert md.count("**") >= 2 * 4          # a bold best in every column


def test_embeddings_npz_bad_input(tmp_path, capsys):
    np.savez(tmp_path / "x.npz", embeddings=np.zeros((3, 4)), labels=np.arange(3))
    assert main(["eval", "--embeddings", str(tmp_path / "x.npz"), "--out", str(tmp_path / "o")]) == 2
    assert "is_distractor" in capsys.readouterr().err
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "single.npz", embeddings=rng.standard_normal((4, 4)), labels=np.arange(4),
             is_distractor=np.zeros(4, bool))
    assert main(["eval", "--embeddings", str(tmp_path / "single.npz"), "--out", str(tmp_path / "o")]) == 2
    assert "no positive pairs" in capsys.readouterr().err
    assert main(["eval", "--embeddings", str(tmp_path / "single.npz"), "--out", str(tmp_path / "o"),
                 "--fprs", "0,0.1"]) == 2
    assert "(0, 1]" in capsys.readouterr().err


def test_trained_checkpoint_and_random_baseline(synth_root, tmp_path, monkeypatch):
    """A checkpoint saved the way training saves it, next to the random-<backbone> baseline: eval embeds the split
    the run held out, writes every artefact, and stores the FPR=0.01 threshold beside the checkpoint, equal to the
    identification_rate threshold of the cached embeddings."""
    import config
    from fr_lib.training.checkpoint import save_checkpoint
    from models_definition import build_backbone

    monkeypatch.setattr(config, "RUNS_DIR", tmp_path / "runs")
    name = "ce-efficientnet"
    cfg = config.get_experiment(name, "tiny", **{"model.backbone": "mobilenetv3_small_100",
                                                  "data.root": str(synth_root), "data.eval_identity_fraction": 0.25})
    torch.manual_seed(1)
    model = build_backbone("mobilenetv3_small_100", embedding_size=cfg.model.embedding_size)
    save_checkpoint(cfg.checkpoint, {"model": model.state_dict(), "config": cfg.to_dict(), "epoch": 1})
    out = tmp_path / "out"
    assert main(["eval", "--experiments", f"{name},random-mobilenetv3_small_100", "--out", str(out)]) == 0
    for artefact in ARTEFACTS:
        assert (out / artefact).is_file(), artefact
    df = pd.read_csv(out / "table.csv", index_col=0)
    assert list(df.index) == [name, "random-mobilenetv3_small_100"]
    res = json.loads((out / "results.json").read_text())["models"]
    # the baseline is evaluated on the same held-out identities as the experiment (its data config)
    assert res[name]["n_query"] == res["random-mobilenetv3_small_100"]["n_query"] > 0
    assert res[name]["n_distractors"] > 0
    assert not (tmp_path / "runs" / "random-mobilenetv3_small_100").exists()
    info = json.loads((cfg.checkpoint.parent / "threshold.json").read_text())
    assert info["fpr"] == 0.01 and info["embedding_size"] == cfg.model.embedding_size
    q = np.load(next((out / "cache").glob(f"{name}-query*.npz")))
    d = np.load(next((out / "cache").glob(f"{name}-distractors*.npz")))
    r = identification_rate(q["embeddings"], q["labels"], d["embeddings"], [0.01])
    assert info["threshold"] == pytest.approx(float(r.thresholds[0]), abs=1e-7)
    # query and distractor identities are disjoint (open-set split)
    assert not {p.split("/")[0] for p in q["paths"]} & {p.split("/")[0] for p in d["paths"]}


def test_unknown_experiment_and_missing_checkpoint(tmp_path, capsys, monkeypatch):
    import config
    monkeypatch.setattr(config, "RUNS_DIR", tmp_path / "runs")
    assert main(["eval", "--experiments", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown embedder 'nope'" in capsys.readouterr().err
    assert main(["eval", "--experiments", "ce-efficientnet", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint" in err and "train it first" in err


def test_query_and_distractor_folders(synth_root, tmp_path):
    """--query/--distractors: every image of the query folder is a query, every image of the other a distractor."""
    ids = sorted(p.name for p in synth_root.iterdir() if p.is_dir())
    for folder, names in (("query", ids[:3]), ("distractors", ids[3:5])):
        (tmp_path / folder).mkdir()
        for n in names:
            (tmp_path / folder / n).symlink_to(synth_root / n, target_is_directory=True)
    out = tmp_path / "out"
    assert main(["eval", "--experiments", "random-mobilenetv3_small_100", "--query", str(tmp_path / "query"),
                 "--distractors", str(tmp_path / "distractors"), "--out", str(out), "--fprs", "0.1"]) == 0
    res = json.loads((out / "results.json").read_text())["models"]["random-mobilenetv3_small_100"]
    n_q = sum(len(list((synth_root / n).iterdir())) for n in ids[:3])
    n_d = sum(len(list((synth_root / n).iterdir())) for n in ids[3:5])
    assert (res["n_query"], res["n_distractors"]) == (n_q, n_d)
    assert res["n_negatives"] == n_q * n_d + n_q * (n_q - 1) // 2 - res["n_positives"]
    assert main(["eval", "--experiments", "random-mobilenetv3_small_100", "--query", str(tmp_path / "query"),
                 "--out", str(out)]) == 2


def test_pairs_lfw_protocol_for_checkpoint_and_random_baseline(synth_root, tmp_path, capsys):
    """--pairs: 10-fold accuracy, EER and AUC equal the LFW protocol on the cosines of the models' embeddings."""
    import config
    from fr_lib.data import build_transforms
    from fr_lib.evaluation.metrics import eer, lfw_10fold_accuracy, roc_auc
    from fr_lib.data.lfw_pairs import read_lfw_pairs, write_lfw_pairs
    from fr_lib.training.loop import train
    from models_definition import build_backbone
    from PIL import Image

    cfg = config.get_experiment("ce-efficientnet", "tiny", **{
        "data.root": str(synth_root), "model.backbone": "mobilenetv3_small_100", "data.image_size": 32,
        "train.output_dir": str(tmp_path / "run")})
    train(cfg, progress=False)
    ckpt = tmp_path / "run" / "last.pt"
    pairs_txt = tmp_path / "pairs.txt"
    write_lfw_pairs(synth_root, pairs_txt, folds=4, pairs_per_fold=8, seed=0)
    out = tmp_path / "out"
    rc = main(["eval", "--experiments", f"{ckpt},random-mobilenetv3_small_100", "--pairs", str(pairs_txt),
               "--data", str(synth_root), "--out", str(out), "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    for f in ("verification.md", "verification.csv", "verification.json"):
        assert (out / f).is_file()
    got = json.loads((out / "verification.json").read_text())
    pairs = read_lfw_pairs(pairs_txt, synth_root)
    issame = np.array([p.issame for p in pairs])
    folds = np.array([p.fold for p in pairs])

    torch.manual_seed(0)
    random_model = build_backbone("mobilenetv3_small_100", pretrained=None).eval()
    from fr_lib.training.checkpoint import load_embedder
    trained, meta = load_embedder(ckpt)
    for key, model, size in ((str(ckpt), trained, meta["image_size"]),
                             ("random-mobilenetv3_small_100", random_model, random_model.default_image_size)):
        tf = build_transforms("imagenet", size, train=False)
        with torch.no_grad():
            def emb(path):
                return model(tf(Image.open(path).convert("RGB"))[None])[0].numpy().astype(np.float64)
            scores = np.array([emb(p.path1) @ emb(p.path2) for p in pairs])
        want_acc = lfw_10fold_accuracy(scores, issame, folds=folds)
        # batched vs one-image forward passes differ by ~1e-7 in the cosines, which can swap two nearly tied
        # scores: allow one pair per fold (accuracy 1/16) and one pos/neg ordering (AUC 1/32 * 1/32 * few)
        assert got[key]["accuracy"] == pytest.approx(want_acc.mean, abs=1 / 16 + 1e-9)
        assert got[key]["eer"] == pytest.approx(eer(scores[issame], scores[~issame])[0], abs=1 / 32 + 1e-9)
        assert got[key]["roc_auc"] == pytest.approx(roc_auc(scores[issame], scores[~issame]), abs=4 / 1024)
        assert got[key]["n_pairs"] == 4 * 2 * 8 and got[key]["n_folds"] == 4


def test_pairs_needs_data_and_experiments(tmp_path, capsys):
    (tmp_path / "p.txt").write_text("1\t1\n")
    assert main(["eval", "--experiments", "random-resnet18", "--pairs", str(tmp_path / "p.txt"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["eval", "--experiments", "random-resnet18", "--pairs", str(tmp_path / "missing.txt"),
                 "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "pairs file not found" in capsys.readouterr().err
