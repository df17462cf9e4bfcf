"""fr_lib.workflows.recipe / fr recipe and fr_lib.evaluation.pair_verification on the synthetic identity folders (never the real photos of the build machine)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import config
from fr_lib.evaluation.metrics import eer, identification_rate, lfw_10fold_accuracy, roc_auc
from fr_lib.evaluation.pair_verification import score_pairs, verify_pairs
from fr_lib.data.lfw_pairs import read_lfw_pairs, write_lfw_pairs
from fr_lib.workflows.recipe import Speed, plan_epochs, run_recipe, split_for


class MeanColour(nn.Module):
    """A known 'embedding model': images (B, 3, H, W) -> unit (B, 12) from the mean of each channel over a 2x2 grid
    of quadrants, minus 0.5 (so cosines spread over [-1, 1])."""
    normalization, default_image_size, embedding_size, backbone_name = "unit", 32, 12, "mean_colour"

    def forward(self, x):
        b = x.shape[0]
        q = nn.functional.adaptive_avg_pool2d(x, 2).reshape(b, -1) - 0.5
        return nn.functional.normalize(q, dim=1)


def _mean_colour_numpy(path) -> np.ndarray:
    img = np.asarray(Image.open(path).convert("RGB").resize((32, 32), Image.BILINEAR), np.float64) / 255.0
    # reference: mean over quadrants, channel-major like the model's reshape of (3, 2, 2)
    q = img.reshape(2, 16, 2, 16, 3).mean(axis=(1, 3)).transpose(2, 0, 1).reshape(-1) - 0.5
    return q / np.linalg.norm(q)


def test_plan_epochs_formula():
    speed = Speed(train_images_per_s=20.0, eval_images_per_s=80.0)
    # one epoch = 1000 / 20 + 400 / 80 = 55 s; 10 min = 600 s -> floor(600 / 55) = 10
    assert plan_epochs(10, 1000, 400, speed) == math.floor(600 / 55)
    assert plan_epochs(10, 1000, 400, speed, max_epochs=4) == 4
    assert plan_epochs(0.01, 1000, 400, speed) == 1          # never fewer than min_epochs
    with pytest.raises(ValueError, match="minutes"):
        plan_epochs(0, 1000, 400, speed)


def test_verify_pairs_matches_direct_computation(synth_root, tmp_path):
    pairs_txt = tmp_path / "pairs.txt"
    write_lfw_pairs(synth_root, pairs_txt, folds=4, pairs_per_fold=10, seed=1)
    pairs = read_lfw_pairs(pairs_txt, synth_root)
    meta = {"name": "mean-colour", "normalization": "unit", "image_size": 32}
    res = verify_pairs(MeanColour(), meta, pairs_txt, synth_root, progress=False)

    scores = np.array([_mean_colour_numpy(p.path1) @ _mean_colour_numpy(p.path2) for p in pairs])
    issame = np.array([p.issame for p in pairs])
    folds = np.array([p.fold for p in pairs])
    want = lfw_10fold_accuracy(scores, issame, folds=folds)
    # the resize differs slightly between torchvision (tensor) and PIL: scores agree to ~1e-3, decisions exactly
    # except for pairs within that distance of a threshold, so compare metrics with a small tolerance
    assert res.n_pairs == len(pairs) == 4 * 2 * 10 and res.n_matched == 40 and res.n_folds == 4
    assert res.accuracy == pytest.approx(want.mean, abs=0.03)
    assert res.eer == pytest.approx(eer(scores[issame], scores[~issame])[0], abs=0.03)
    assert res.roc_auc == pytest.approx(roc_auc(scores[issame], scores[~issame]), abs=0.02)


def test_score_pairs_is_lfw_protocol():
    rng = np.random.default_rng(0)
    issame = np.tile(np.r_[np.ones(50, bool), np.zeros(50, bool)], 10)
    scores = rng.normal(0, 1, issame.size) + 1.5 * issame
    folds = np.repeat(np.arange(10), 100)
    res = score_pairs(scores, issame, folds)
    acc = lfw_10fold_accuracy(scores, issame, folds=folds)
    assert res.accuracy == acc.mean and res.accuracy_std == acc.std
    assert (res.eer, res.eer_threshold) == eer(scores[issame], scores[~issame])
    assert res.roc_auc == roc_auc(scores[issame], scores[~issame])
    # two unit-variance Gaussians 1.5 apart: EER = Phi(-0.75) = 0.2266 (sampling error ~0.02 at 500 pairs each)
    assert res.eer == pytest.approx(0.2266, abs=0.04)


def _tiny_cfg(name: str) -> config.ExperimentConfig:
    return config.get_experiment(name, "tiny", **{
        "model.backbone": "mobilenetv3_small_100", "data.image_size": 32, "data.batch_size": 16,
        "data.eval_identity_fraction": 0.25, "data.min_images_per_identity": 2, "optim.warmup_epochs": 0.0})


def test_run_recipe_end_to_end(synth_root, tmp_path, monkeypatch):
    import fr_lib.embedders.resolve

    real = fr_lib.embedders.resolve.resolve_embedder

    def no_dlib(name, *a, **kw):   # dlib itself is tested in test_baselines; here: the skipped row
        if name == "dlib-resnet":
            raise ImportError("the dlib baseline needs dlib: pip install 'fr_lib[dlib]'")
        return real(name, *a, **kw)

    monkeypatch.setattr(fr_lib.embedders.resolve, "resolve_embedder", no_dlib)
    out, work = tmp_path / "out", tmp_path / "work"
    cfgs = {"ce-efficientnet": _tiny_cfg("ce-efficientnet")}
    summary = run_recipe(synth_root, cfgs, minutes=0.01, out_dir=out, work_dir=work, device="cpu",
                         baselines=("random-mobilenetv3_small_100", "dlib-resnet"),
                         skip_align=True, pairs_folds=4, pairs_per_fold=10, max_epochs=1, progress=False,
                         flip=False)
    # identity-disjoint: the trained model never saw a query/distractor identity, and pairs.txt uses only those
    split = split_for(cfgs["ce-efficientnet"].replace(**{"data.root": str(synth_root)}).data)
    last = work / "runs" / "ce-efficientnet" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    seen = set(ckpt["metrics"]["classes"])
    held = set(split.held_out_classes)
    assert seen == set(split.train_classes) and not seen & held and len(held) == 4
    names_in_pairs = {tok for line in (out / "pairs.txt").read_text().splitlines()[1:]
                      for tok in line.split("\t") if not tok.isdigit()}
    assert names_in_pairs <= held

    # the budget: one epoch planned (max_epochs), the run trained exactly that
    rec = summary["experiments"]["ce-efficientnet"]
    assert rec["epochs"] == 1 and ckpt["epoch"] == 1 and rec["train_images_per_s"] > 0

    # the table's numbers are the ID-rate protocol on the trained model's embeddings of the held-out images
    from fr_lib.evaluation.held_out import embed_held_out
    from fr_lib.workflows.recipe import train_within_budget
    model, meta = real(last)
    emb = embed_held_out(model, meta, split, progress=False)
    r = identification_rate(emb.query, emb.query_labels, emb.distractors)
    got = rec["eval"]["tpr_at_fpr"]
    assert [got[f"{f:g}"] for f in r.fprs.tolist()] == pytest.approx(r.tprs.tolist())
    assert rec["eval"]["roc_auc"] == pytest.approx(r.roc_auc)
    assert rec["eval"]["source"] == str(last)                  # the last epoch by default

    table = (out / "table.md").read_text()
    assert "ce-efficientnet" in table and "random-mobilenetv3_small_100" in table and "dlib" not in table
    assert summary["skipped"]["dlib-resnet"].startswith("the dlib baseline needs dlib")
    results = json.loads((out / "results.json").read_text())
    assert results["skipped"] == summary["skipped"] and set(results["models"]) == {"ce-efficientnet",
                                                                                   "random-mobilenetv3_small_100"}
    assert results["models"]["ce-efficientnet"]["tpr_at_fpr"] == got
    for f in ("table.csv", "table.html", "results.json", "verification.md", "verification.csv", "roc_curves.png",
              "similarity_distributions.png", "training_ce-efficientnet.png", "summary.json"):
        assert (out / f).is_file(), f
    saved = json.loads((out / "summary.json").read_text())
    assert saved["split"]["query_identities"] + saved["split"]["distractor_identities"] == 4

    # rerun of the training step: the stored plan is kept and a finished run is not retrained
    mtime = last.stat().st_mtime_ns
    cfg = cfgs["ce-efficientnet"].replace(**{"data.root": str(synth_root), "train.output_dir": str(last.parent)})
    again = train_within_budget(cfg, 5.0, split, progress=False)
    assert again["epochs"] == 1 and last.stat().st_mtime_ns == mtime

    # the same run folder with another config is refused, not silently reused
    with pytest.raises(ValueError, match=r"another config \(optim.lr: .* -> 0.5\)"):
        train_within_budget(cfg.replace(**{"optim.lr": 0.5}), 5.0, split, progress=False)

    # a fixed epoch count instead of a time budget: exactly that many epochs, no budget recorded
    fixed = train_within_budget(cfg.replace(**{"train.output_dir": str(tmp_path / "fixed")}), None, split,
                                progress=False, epochs=2)
    assert fixed["epochs"] == 2 and fixed["budget_s"] is None
    assert torch.load(tmp_path / "fixed" / "last.pt", weights_only=True)["epoch"] == 2

    # the flip test: the same finished run evaluated again, now on the mean of each crop's and its mirror's
    # embedding, in the table and in the pairs verification
    flipped = run_recipe(synth_root, cfgs, minutes=0.01, out_dir=tmp_path / "out-flip", work_dir=work,
                         device="cpu", baselines=(), skip_align=True, pairs_folds=4, pairs_per_fold=10,
                         max_epochs=1, progress=False, flip=True)
    assert last.stat().st_mtime_ns == mtime and flipped["flip_test"] and not summary["flip_test"]
    emb_f = embed_held_out(model, meta, split, flip=True, progress=False)
    assert not np.allclose(emb_f.query, emb.query)
    r_f = identification_rate(emb_f.query, emb_f.query_labels, emb_f.distractors)
    got_f = flipped["experiments"]["ce-efficientnet"]["eval"]
    assert got_f["roc_auc"] == pytest.approx(r_f.roc_auc) and got_f["roc_auc"] != pytest.approx(r.roc_auc)
    pairs = read_lfw_pairs(tmp_path / "out-flip" / "pairs.txt", synth_root)
    v = verify_pairs(model, meta, tmp_path / "out-flip" / "pairs.txt", synth_root, flip=True, progress=False)
    assert got_f["pairs"]["accuracy"] == pytest.approx(v.accuracy) and len(pairs) == 80


def test_recipe_rejects_configs_that_split_differently(synth_root, tmp_path):
    cfgs = {"a": _tiny_cfg("ce-efficientnet"),
            "b": _tiny_cfg("ce-efficientnet").replace(**{"data.seed": 3})}
    with pytest.raises(ValueError, match="splits the data differently"):
        run_recipe(synth_root, cfgs, minutes=0.01, out_dir=tmp_path / "o", work_dir=tmp_path / "w",
                   skip_align=True, progress=False)


def test_recipe_cli_overrides_and_errors(tmp_path, capsys):
    from fr_lib.cli import build_parser, main
    import config
    from fr_lib.cli.recipe import experiment_configs

    cfgs = experiment_configs(["ce-efficientnet", "arcface-efficientnet"], ["optim.lr=0.005"])
    arc = cfgs["arcface-efficientnet"]
    small_arc = config.SMALL_OVERRIDES["arcface-efficientnet"]
    assert arc.loss.scale == small_arc["loss.scale"] == 16.0 and arc.loss.margin == small_arc["loss.margin"] == 0.2
    assert arc.data.batch_size == config.PRESETS["small"]["data.batch_size"]
    assert arc.data.image_size == 96 and cfgs["ce-efficientnet"].loss.name == "ce"
    from fr_lib.cli.recipe import default_baselines
    assert default_baselines(cfgs.values()) == ["random-efficientnet_b0@96", "random-efficientnet_b0", "dlib-resnet"]
    assert cfgs["ce-efficientnet"].optim.lr == arc.optim.lr == 0.005          # --set wins over the recipe's
    two = experiment_configs(["ce-efficientnet", "arcface-efficientnet"],
                             ["arcface-efficientnet:train.freeze_backbone=true", "train.seed=3"])
    assert two["arcface-efficientnet"].train.freeze_backbone and not two["ce-efficientnet"].train.freeze_backbone
    assert two["arcface-efficientnet"].train.seed == two["ce-efficientnet"].train.seed == 3
    with pytest.raises(KeyError, match="not one of the experiments"):
        experiment_configs(["ce-efficientnet"], ["arcface-efficientnet:loss.margin=0.3"])
    args = build_parser().parse_args(["recipe", str(tmp_path), "--minutes", "1", "--out", str(tmp_path / "o")])
    assert args.experiments == "ce-efficientnet,arcface-efficientnet" and args.func.__name__ == "recipe_command"
    assert args.flip and not build_parser().parse_args(["recipe", str(tmp_path), "--out", "o", "--no-flip"]).flip
    assert main(["recipe", str(tmp_path), "--out", str(tmp_path / "o")]) == 2                # neither
    assert "one of --minutes" in capsys.readouterr().err
    assert main(["recipe", str(tmp_path), "--minutes", "1", "--epochs", "3", "--out", str(tmp_path / "o")]) == 2
    assert "one of --minutes" in capsys.readouterr().err
    assert main(["recipe", str(tmp_path / "missing"), "--minutes", "1", "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["recipe", str(tmp_path), "--minutes", "1", "--out", str(tmp_path / "o"),
                 "--experiments", "nope"]) == 2
    assert "unknown experiment" in capsys.readouterr().err


def test_align_step_reports_photos_without_faces(tmp_path):
    from fr_lib.workflows.recipe import align_photos

    for ident in ("a", "b"):
        (tmp_path / "photos" / ident).mkdir(parents=True)
        Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(tmp_path / "photos" / ident / "0.jpg")
    with pytest.raises(ValueError, match="no photo .* gave a usable face"):
        align_photos(tmp_path / "photos", tmp_path / "aligned", progress=False)
