"""The training engine end to end on the synthetic fixture: every registered experiment, exact resume after
SIGKILL, divergence handling, the two-stage recipe."""
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import config
from fr_lib.training.checkpoint import load_checkpoint, load_embedder
from fr_lib.training.loop import TrainingDiverged, train

REPO = Path(__file__).resolve().parents[2]


def _tiny(name, root, out, **overrides):
    size = 80 if "inceptionresnet" in name else 64  # InceptionResnetV1 needs >= 80 px
    return config.get_experiment(name, "tiny", **{"data.root": str(root), "data.image_size": size,
                                                  "train.output_dir": str(out), **overrides})


@pytest.mark.parametrize("name", sorted(config.EXPERIMENTS))
def test_every_experiment_trains_one_epoch(name, synth_root, tmp_path):
    cfg = _tiny(name, synth_root, tmp_path / name, **{"data.max_images_per_identity": 8})
    summary = train(cfg, progress=False)
    (row,) = summary["history"]
    assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])
    assert 0.0 <= row["tpr@fpr=0.01"] <= 1.0
    has_logits = cfg.loss.name in ("ce", "arcface", "cosface", "group")   # the criteria with class weights
    assert math.isfinite(row["val_accuracy"]) == has_logits
    ckpt = load_checkpoint(summary["best_checkpoint"])
    assert ckpt["epoch"] == 1 and ckpt["config"] == cfg.to_dict()
    assert load_checkpoint(summary["last_checkpoint"])["epoch"] == 1
    csv = (tmp_path / name / "metrics.csv").read_text().splitlines()
    assert len(csv) == 2 and "tpr@fpr=0.01" in csv[0]
    assert any((tmp_path / name / "tb").iterdir())
    # the embedder rebuilt from the config snapshot carries exactly the trained weights
    model, meta = load_embedder(summary["best_checkpoint"])
    assert meta["image_size"] == cfg.data.image_size and meta["normalization"] == model.normalization
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        emb = model(torch.randn(2, 3, cfg.data.image_size, cfg.data.image_size))
    assert emb.shape == (2, cfg.model.embedding_size)


def _resume_cfg(root, out, epochs=3):
    # small timm backbone; dropout + augmentation + warmup/cosine make the RNG and schedule state matter
    return _tiny("ce-efficientnet", root, out, **{"model.backbone": "resnet10t", "model.dropout": 0.2,
                                                  "model.embedding_size": 32, "train.epochs": epochs,
                                                  "optim.warmup_epochs": 1.0, "data.max_images_per_identity": 6})


def test_kill_and_resume_gives_bit_identical_weights(synth_root, tmp_path):
    ref = train(_resume_cfg(synth_root, tmp_path / "ref"), progress=False)

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "fr_lib", "train", "--experiment", "ce-efficientnet", "--preset", "tiny",
           "--data", str(synth_root), "--epochs", "3", "--output-dir", str(out), "--no-progress",
           "--set", "data.image_size=64", "--set", "model.backbone=resnet10t", "--set", "model.dropout=0.2",
           "--set", "model.embedding_size=32", "--set", "optim.warmup_epochs=1.0",
           "--set", "data.max_images_per_identity=6"]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # same kernels as this process
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not (out / "last.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert load_checkpoint(out / "last.pt")["epoch"] < 3  # killed mid-run

    resumed = train(_resume_cfg(synth_root, out), resume=True, progress=False)
    a, b = load_checkpoint(ref["last_checkpoint"]), load_checkpoint(resumed["last_checkpoint"])
    assert a["epoch"] == b["epoch"] == 3
    for part in ("model", "criterion"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    assert [h["train_loss"] for h in a["metrics"]["history"]] == [h["train_loss"] for h in b["metrics"]["history"]]


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(synth_root, tmp_path, monkeypatch):
    import fr_lib.training.loop as engine

    real_build = engine.build_criterion
    calls = {"train": 0}

    def poisoned(*args, **kw):  # NaN from the first training step of epoch 2 on
        crit = real_build(*args, **kw)
        forward = crit.forward

        def nan_forward(emb, labels):
            loss = forward(emb, labels)
            if crit.training:
                calls["train"] += 1
                if calls["train"] > steps_per_epoch:
                    return loss * float("nan")
            return loss
        crit.forward = nan_forward
        return crit

    cfg = _resume_cfg(synth_root, tmp_path, epochs=2)
    steps_per_epoch = 4  # 13 training identities x 5 train images (1 of 6 to val) // batch 16
    monkeypatch.setattr(engine, "build_criterion", poisoned)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 2, step 1 .*last good checkpoint kept.*epoch 1"):
        train(cfg, progress=False)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_two_stage_recipe_freezes_backbone(synth_root, tmp_path):
    first = train(_resume_cfg(synth_root, tmp_path / "stage1", epochs=1), progress=False)
    cfg = _tiny("arcface-efficientnet", synth_root, tmp_path / "stage2",
                **{"model.backbone": "resnet10t", "model.embedding_size": 32, "data.max_images_per_identity": 6,
                   "train.init_from": str(first["best_checkpoint"]), "train.freeze_backbone": True})
    second = train(cfg, progress=False)
    a, b = load_checkpoint(first["best_checkpoint"])["model"], load_checkpoint(second["last_checkpoint"])["model"]
    backbone = [k for k in a if k.startswith("backbone.")]
    assert backbone and all(torch.equal(a[k], b[k]) for k in backbone)  # weights and BN statistics untouched
    assert not torch.equal(a["neck.linear.weight"], b["neck.linear.weight"])


def test_packed_cache_feeds_the_same_pixels_as_jpeg_decoding(synth_root, tmp_path):
    rows = []
    for packed in (False, True):
        cfg = _resume_cfg(synth_root, tmp_path / str(packed), epochs=0)
        cfg = cfg.replace(**{"data.packed_cache": packed, "data.cache_dir": str(tmp_path / "packs"),
                             "train.eval_at_start": True})
        rows.append(train(cfg, progress=False)["history"][0])
    assert list((tmp_path / "packs").glob("*-train-64px.npy"))
    assert rows[0]["val_loss"] == pytest.approx(rows[1]["val_loss"], rel=1e-3)
    assert rows[0]["tpr@fpr=0.01"] == pytest.approx(rows[1]["tpr@fpr=0.01"], abs=0.02)


def test_cli_rejects_bad_overrides(capsys):
    from fr_lib.cli import main

    assert main(["train", "--experiment", "ce-efficientnet", "--set", "optim.lr=fast"]) == 2
    assert "optim.lr" in capsys.readouterr().err
    assert main(["train", "--experiment", "ce-efficientnet", "--set", "optim.lrr=1"]) == 2


def test_early_stopping_stops_after_patience_epochs_without_val_improvement(synth_root, tmp_path, monkeypatch):
    import fr_lib.training.loop as engine

    val_losses = iter([3.0, 2.0, 2.5, 2.4, 1.0, 0.5])   # best at epoch 2; epochs 3 and 4 do not improve

    def scripted_eval(*args, **kw):
        return {"val_loss": next(val_losses), "val_accuracy": 0.0, "tpr@fpr=0.01": 0.0}

    monkeypatch.setattr(engine, "evaluate", scripted_eval)
    cfg = _resume_cfg(synth_root, tmp_path, epochs=6).replace(**{"train.early_stopping_patience": 2})
    summary = train(cfg, progress=False)
    assert summary["stopped_early"] and summary["epochs_run"] == 4
    assert summary["best_epoch"] == 2
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 2       # best.pt is the min-val-loss epoch
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 4
    csv = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(csv) == 1 + 4


def test_config_differences_names_each_changed_leaf():
    from fr_lib.training.checkpoint import config_differences

    old = config.get_experiment("ce-efficientnet", "tiny").to_dict()
    assert config_differences(old, old) == []
    new = config.get_experiment("ce-efficientnet", "tiny", **{"optim.lr": 0.5, "train.device": "cpu"}).to_dict()
    assert config_differences(old, new) == [f"optim.lr: {old['optim']['lr']!r} -> 0.5", "train.device: 'auto' -> 'cpu'"]
    assert config_differences(old, new, ignore={"train.device"}) == [f"optim.lr: {old['optim']['lr']!r} -> 0.5"]
    older = {**old, "data": {k: v for k, v in old["data"].items() if k != "batch_augment"}}   # a field added later
    assert config_differences(older, old) == ["data.batch_augment: (absent) -> False"]
    assert config_differences({"a": (1, 2)}, {"a": [1, 2]}) == []                            # as JSON stores it
