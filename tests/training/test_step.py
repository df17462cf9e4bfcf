"""build_run / train_step / measure_speed: the one training step, against a hand-written step."""
import copy
import math

import pytest
import torch

import config
from fr_lib.data import scan_folder
from fr_lib.losses import build_criterion
from fr_lib.training.loop import build_run, train_step
from fr_lib.training.speed import Speed, measure_speed
from models_definition import build_backbone

CPU = torch.device("cpu")


def _cfg(name="ce-efficientnet", **overrides):
    return config.get_experiment(name, "tiny", **{"model.backbone": "resnet10t", "model.embedding_size": 16,
                                                  "data.image_size": 32, "data.batch_size": 4, **overrides})


def _batch(seed=1, uint8=False):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randint(0, 256, (4, 3, 32, 32), generator=g, dtype=torch.uint8) if uint8
         else torch.randn(4, 3, 32, 32, generator=g))
    return x, torch.tensor([0, 0, 1, 1])


def test_build_run_draws_model_then_criterion_weights_from_the_seeded_rng():
    cfg = _cfg("arcface-efficientnet", **{"loss.margin": 0.3})
    torch.manual_seed(7)
    run = build_run(cfg, 5, CPU, steps_per_epoch=3)
    torch.manual_seed(7)
    model = build_backbone("resnet10t", 16, None, cfg.model.dropout)
    criterion = build_criterion(cfg.loss, 5, 16)
    assert all(torch.equal(a, b) for a, b in zip(run.model.state_dict().values(), model.state_dict().values()))
    assert torch.equal(run.criterion.weight, criterion.weight)
    assert run.criterion.loss.margin == pytest.approx(0.3)
    assert run.schedule.steps_per_epoch == 3 and run.grad_clip == cfg.optim.grad_clip
    assert {id(p) for p in run.params} == {id(p) for p in list(run.model.parameters()) +
                                           list(run.criterion.parameters())}


def test_amp_and_channels_last_apply_on_cuda_only_unless_asked():
    cfg = _cfg(**{"train.amp": "bf16", "train.channels_last": True})
    run = build_run(cfg, 3, CPU)
    assert (run.amp, run.channels_last, run.scaler.is_enabled()) == ("none", False, False)
    forced = build_run(cfg, 3, CPU, apply_on_cpu=True)
    assert (forced.amp, forced.channels_last) == ("bf16", True)
    conv = next(p for p in forced.model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="train.amp"):
        build_run(_cfg(**{"train.amp": "bf17"}), 3, CPU)


def test_train_step_is_forward_backward_clip_step():
    cfg = _cfg(**{"optim.grad_clip": 0.01, "model.dropout": 0.0})
    torch.manual_seed(0)
    run = build_run(cfg, 2, CPU, steps_per_epoch=4)
    model, criterion = copy.deepcopy(run.model), copy.deepcopy(run.criterion)
    params = [p for p in list(model.parameters()) + list(criterion.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=run.optimizer.param_groups[0]["lr"], weight_decay=cfg.optim.weight_decay)
    x, y = _batch()
    run.model.train(), run.criterion.train(), model.train(), criterion.train()

    loss = train_step(run, x, y)
    ref = criterion(model(x), y)
    ref.backward()
    torch.nn.utils.clip_grad_norm_(params, 0.01)
    opt.step()
    assert loss == pytest.approx(float(ref.detach()), rel=1e-6)
    for a, b in zip(run.model.parameters(), model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(run.criterion.classifier.weight, criterion.classifier.weight, atol=1e-6)
    assert run.schedule.lambda_lr.last_epoch == 1   # the schedule advanced one step


def test_train_step_applies_nothing_on_a_nan_loss():
    run = build_run(_cfg(), 2, CPU)
    before = [p.detach().clone() for p in run.params]
    x, y = _batch()
    x[0, 0, 0, 0] = math.nan
    assert math.isnan(train_step(run, x, y))
    assert all(torch.equal(a, b) for a, b in zip(before, run.params))   # no optimiser step
    assert not run.optimizer.state and run.schedule.lambda_lr.last_epoch == 0


def test_train_step_augments_uint8_batches_on_the_device():
    run = build_run(_cfg(**{"data.batch_augment": True}), 2, CPU)
    assert run.batch_augment is not None
    assert math.isfinite(train_step(run, *_batch(uint8=True)))
    with pytest.raises(ValueError, match="uint8"):
        train_step(run, *_batch())   # the loader of a batch_augment run yields uint8 only


def test_measure_speed_runs_the_real_step_and_leaves_the_rng_alone(synth_root):
    state = torch.get_rng_state()
    speed = measure_speed(_cfg(**{"data.batch_augment": True}), 4, steps=1, warmup=0)
    assert isinstance(speed, Speed) and speed.train_images_per_s > 0 and speed.eval_images_per_s > 0
    assert torch.equal(torch.get_rng_state(), state)
    index = scan_folder(synth_root)
    samples = [(p, label) for p, label in index.samples][:12]     # 3 batches of 4: 1 warmup + 2 rounds of 1
    real = measure_speed(_cfg(), 4, steps=1, warmup=1, index=index, samples=samples)
    assert math.isfinite(real.train_images_per_s) and real.train_images_per_s > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")
def test_on_cuda_the_step_runs_under_the_configs_amp_and_channels_last():
    cfg = _cfg(**{"train.amp": "bf16", "train.channels_last": True, "data.batch_augment": True})
    run = build_run(cfg, 2, torch.device("cuda"))
    assert (run.amp, run.channels_last) == ("bf16", True) and next(run.model.parameters()).is_cuda
    assert math.isfinite(train_step(run, *_batch(uint8=True)))
    assert all(p.dtype == torch.float32 for p in run.params)          # autocast leaves the weights fp32
    speed = measure_speed(cfg, 2, steps=1, warmup=1, device="cuda")
    assert speed.train_images_per_s > 0 and speed.eval_images_per_s > 0
