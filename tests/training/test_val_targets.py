"""Per-epoch .bin verification in train(): metrics.csv, TensorBoard, the epoch summary line, the values equal to
verifying the saved checkpoint afterwards, and under DDP (2 gloo processes) rank 0 alone evaluates."""
from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

import config
from fr_lib.data.bin_sets import write_bin_from_folder
from fr_lib.evaluation.bin_verification import verify_bin
from fr_lib.training.checkpoint import load_embedder
from fr_lib.training.loop import train


@pytest.fixture(scope="module")
def synth_bin(tmp_path_factory):
    """A 20-pair .bin of identities the training data does not have (synthetic seed 1, 6 identities x 4)."""
    from fr_lib.data.synth import generate_dataset

    tmp = tmp_path_factory.mktemp("synthbin")
    generate_dataset(tmp / "held_out", identities=6, images_per_identity=4, size=112, seed=1, workers=0)
    return write_bin_from_folder(tmp / "held_out", tmp / "synth_lfw.bin", n_pairs=20, seed=0)


def _cfg(root, out, targets, **overrides):
    return config.get_experiment("arcface-efficientnet", "tiny", **{
        "data.root": str(root), "data.image_size": 64, "data.max_images_per_identity": 6,
        "model.backbone": "resnet10t", "model.embedding_size": 32, "train.output_dir": str(out),
        "train.val_targets": tuple(str(t) for t in targets), **overrides})


def _tb_scalars(tb_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


def test_each_epoch_logs_bin_accuracy(synth_root, synth_bin, tmp_path, capsys):
    out = tmp_path / "run"
    summary = train(_cfg(synth_root, out, [synth_bin], **{"train.epochs": 2, "train.eval_at_start": True}),
                    progress=False)
    history = summary["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]
    accs = [h["synth_lfw_accuracy"] for h in history]
    assert all(0.0 <= a <= 1.0 for a in accs)
    # the logged number is the protocol applied to the weights of that epoch: last.pt holds epoch 2's
    model, meta = load_embedder(summary["last_checkpoint"])
    assert accs[-1] == pytest.approx(verify_bin(model, meta, synth_bin, progress=False).accuracy, abs=1e-9)
    csv = (out / "metrics.csv").read_text().splitlines()
    col = csv[0].split(",").index("synth_lfw_accuracy")
    assert [float(line.split(",")[col]) for line in csv[1:]] == pytest.approx(accs)
    assert [s for s, _ in _tb_scalars(out / "tb", "epoch/synth_lfw_accuracy")] == [0, 1, 2]
    assert [v for _, v in _tb_scalars(out / "tb", "epoch/synth_lfw_accuracy")] == pytest.approx(accs, abs=1e-6)
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch 2/2"))
    assert f"synth_lfw acc {accs[-1]:.4f}" in line


def test_no_targets_for_a_folder_and_a_missing_one_fails_before_training(synth_root, tmp_path):
    summary = train(_cfg(synth_root, tmp_path / "plain", []), progress=False)
    assert not any(k.endswith("_accuracy") and k != "val_accuracy" for k in summary["history"][0])
    with pytest.raises(FileNotFoundError, match="'nosuch' not found"):
        train(_cfg(synth_root, tmp_path / "missing", ["nosuch"]), progress=False)
    assert not (tmp_path / "missing" / "last.pt").exists()


# ------------------------------------------------------------------------------------------- DDP
WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, root, bin_path, out, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from fr_lib.evaluation import bin_verification

    calls = []
    original = bin_verification.VerificationTargets.__call__

    def counted(self, model, device):
        calls.append(rank)
        return original(self, model, device)

    bin_verification.VerificationTargets.__call__ = counted
    summary = train(_cfg(root, out, [bin_path]), progress=False)
    torch.save({"calls": len(calls), "history": summary["history"]}, f"{results}/rank{rank}.pt")
    import torch.distributed as dist

    dist.destroy_process_group()


def test_ddp_rank0_evaluates_and_every_rank_sees_it(synth_root, synth_bin, tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(synth_root), str(synth_bin), str(tmp_path / "run"), str(tmp_path)),
             nprocs=WORLD)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD))
    assert (r0["calls"], r1["calls"]) == (1, 0)
    (h0,), (h1,) = r0["history"], r1["history"]
    assert h0["synth_lfw_accuracy"] == h1["synth_lfw_accuracy"] and not math.isnan(h0["synth_lfw_accuracy"])
    model, meta = load_embedder(tmp_path / "run" / "last.pt")
    assert h0["synth_lfw_accuracy"] == pytest.approx(verify_bin(model, meta, synth_bin, progress=False).accuracy)


def test_bin_files_beside_a_pack_are_found_without_config(synth_root, synth_bin, tmp_path):
    """A training pack (fr data pack layout) with lfw.bin-like files beside it, as CASIA-WebFace ships: no
    val_targets needed."""
    import shutil

    from fr_lib.data.pack import write_pack
    from fr_lib.data.scan import scan_folder

    pack = tmp_path / "pack"
    write_pack(scan_folder(synth_root), pack, progress=False)
    shutil.copy(synth_bin, pack / "agedb_30.bin")
    shutil.copy(synth_bin, pack / "lfw.bin")
    summary = train(_cfg(pack, tmp_path / "run", []), progress=False)
    (row,) = summary["history"]
    assert 0 <= row["agedb_30_accuracy"] <= 1 and row["lfw_accuracy"] == row["agedb_30_accuracy"]   # same pairs
