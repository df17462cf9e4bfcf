"""Learning-rate schedule against its closed form, and checkpoint I/O (atomic writes, RNG round trip)."""
import math
import random

import numpy as np
import pytest
import torch

from fr_lib.training.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from fr_lib.training.schedule import LRSchedule, build_optimizer


def _opt(lr=0.1):
    return build_optimizer([torch.nn.Parameter(torch.zeros(2))], "sgd", lr)


def _lrs(schedule, opt, steps):
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step_batch()
    return out


def test_warmup_then_cosine_closed_form():
    opt = _opt(0.1)
    sched = LRSchedule(opt, "cosine", epochs=4, steps_per_epoch=5, warmup_epochs=1)
    lrs = _lrs(sched, opt, 20)
    expected = [0.1 * (t + 1) / 5 for t in range(5)] + \
               [0.1 * 0.5 * (1 + math.cos(math.pi * (t - 5) / 15)) for t in range(5, 20)]
    assert lrs == pytest.approx(expected)


def test_step_schedule_and_resume_state():
    opt = _opt(1.0)
    sched = LRSchedule(opt, "step", epochs=6, steps_per_epoch=2, step_size=2, gamma=0.5)
    assert _lrs(sched, opt, 12) == pytest.approx([1, 1, 1, 1, .5, .5, .5, .5, .25, .25, .25, .25])
    opt2 = _opt(1.0)
    sched2 = LRSchedule(opt2, "step", epochs=6, steps_per_epoch=2, step_size=2, gamma=0.5)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    assert sched2.lambda_lr.last_epoch == 12 and opt2.param_groups[0]["lr"] == pytest.approx(0.125)


def test_plateau_lowers_lr_after_patience_and_not_during_warmup():
    opt = _opt(1.0)
    sched = LRSchedule(opt, "plateau", epochs=10, steps_per_epoch=2, warmup_epochs=1, gamma=0.1,
                       plateau_patience=1)
    assert _lrs(sched, opt, 2) == pytest.approx([0.5, 1.0])
    for loss in (1.0, 1.0, 1.0):   # best, then 2 epochs without improvement > patience 1
        _lrs(sched, opt, 2)
        sched.step_epoch(loss)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    _lrs(sched, opt, 2)  # the per-step factor no longer overrides the plateau's reduction
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)


def test_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(3)})

    def broken_save(obj, f):  # torch.save takes a path or a file object
        if hasattr(f, "write"):
            f.write(b"partial")
        else:
            open(f, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2})
    assert load_checkpoint(path)["epoch"] == 1  # the old checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_rng_state_round_trip_through_a_weights_only_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"rng": capture_rng_state()})
    first = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)], np.random.randn())
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)], np.random.randn())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2] == again[2] and first[3] == again[3]


def test_load_checkpoint_missing_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
