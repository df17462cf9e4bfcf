"""One training loop for every loss: ``train(cfg)`` with cfg a config.ExperimentConfig (or anything shaped like it).

    run = build_run(cfg, num_classes, device, steps_per_epoch)  # model, criterion, optimizer, schedule, scaler
    for epoch in range(start_epoch, epochs):
        for images, labels in loader:                            # triplet: P x K batches (data.samples_per_class)
            loss = train_step(run, images, labels)               # forward + criterion, backward, optimiser step
        row = {"epoch": ..., "train_loss": ..., **evaluate_epoch()}
        save best.pt (log.best_epoch) and last.pt

Under DDP the criterion sees the embeddings of every rank (TrainStep). Per epoch: train loss, val loss and
closed-set val accuracy (``criterion.logits`` where the criterion has class weights), a quick open-set TPR@FPR
(query vs distractors of held-out identities); checkpoints ``best.pt`` (fr_lib.training.log.best_epoch) and
``last.pt`` (the resume point), metrics.csv and TensorBoard events under cfg.output_dir.
fr_lib.training.speed times the same train_step on the same build_run objects.
Launch several processes with ``torchrun --nproc_per_node N -m fr_lib train ...``.
"""
from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from fr_lib.data import ShuffleBatchSampler, build_batch_sampler
from fr_lib.data.batch_augment import BatchAugment
from fr_lib.device import resolve_device_name
from fr_lib.evaluation.bin_verification import VerificationTargets
from fr_lib.evaluation.metrics import identification_rate
from fr_lib.losses import build_criterion
from fr_lib.progress import progress_bar, progress_write
from fr_lib.training import distributed as D
from fr_lib.training.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from fr_lib.training.data import build_training_data, make_loader
from fr_lib.training.log import MetricsLog, best_epoch
from fr_lib.training.schedule import LRSchedule, build_optimizer
from models_definition import build_backbone

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stopped without writing a checkpoint."""


class TrainStep(nn.Module):
    """images, labels -> (loss, embeddings). One module so that DDP syncs the gradients of the model and of the
    criterion's class weights together. With ``gather`` (several processes) the criterion sees the embeddings
    and labels of every rank; its gradient then equals the single-process gradient on the global batch (the
    gathered loss is identical on every rank, all_gather's backward sums the ranks' gradients, DDP averages)."""

    def __init__(self, model: nn.Module, criterion: nn.Module, gather: bool = False):
        super().__init__()
        self.model, self.criterion, self.gather = model, criterion, gather

    def forward(self, images: torch.Tensor, labels: torch.Tensor):
        embeddings = self.model(images)
        if self.gather:
            embeddings, labels = D.all_gather_with_grad(embeddings), D.all_gather_no_grad(labels)
        return self.criterion(embeddings, labels), embeddings


@dataclass
class Run:
    """What a training run optimises, built by build_run and stepped by train_step (train(),
    fr_lib.training.speed.measure_speed and benchmarks/train_step.py)."""
    model: nn.Module                   # backbone + neck on ``device``: (B, 3, S, S) -> (B, D) unit embeddings
    criterion: nn.Module               # (embeddings, labels) -> loss; holds the class weights where it has them
    optimizer: torch.optim.Optimizer   # over ``params``
    schedule: LRSchedule               # step_batch() after each step (train_step), step_epoch(val_loss) per epoch
    scaler: torch.amp.GradScaler       # loss scaling; enabled for fp16 only
    step_module: nn.Module             # TrainStep(model, torch.compiled with train.compile; criterion), DDP-wrapped
    params: list                       # trainable parameters of model and criterion (gradient clipping)
    device: torch.device
    amp: str                           # autocast as applied: 'bf16' | 'fp16' | 'none' (always 'none' on a CPU)
    channels_last: bool                # as applied (CUDA only)
    grad_clip: float | None            # max global gradient norm; None = off
    batch_augment: nn.Module | None    # BatchAugment on the device (data.batch_augment): loaders yield uint8


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """torch.device for a config's train.device (fr_lib.device.resolve_device_name; 'cuda' -> this rank's GPU)."""
    return torch.device(resolve_device_name(name, local_rank))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _autocast(device: torch.device, amp: str):
    """bf16 / fp16 autocast on ``device``, or nothing for 'none'. build_run decides where AMP applies (CUDA only
    by default: CPU bf16 ranges from ~18x slower without bf16 units to ~1-2x faster with avx512_bf16,
    benchmarks/train_step.py)."""
    if amp == "none":
        return nullcontext()
    if amp not in AMP_DTYPES:
        raise ValueError(f"unknown amp {amp!r}; choose bf16, fp16 or none")
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def _init_from(model: nn.Module, path: str) -> None:
    """Two-stage recipe: start from another run's weights. The neck is taken too when its shape matches."""
    state = load_checkpoint(path)["model"]
    own = model.state_dict()
    keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing_backbone = [k for k in own if k.startswith("backbone.") and k not in keep]
    if missing_backbone:
        raise ValueError(f"init_from {path}: backbone does not match ({len(missing_backbone)} tensors missing, "
                         f"e.g. {missing_backbone[0]})")
    model.load_state_dict(keep, strict=False)
    fresh = sorted({k.split(".")[1] for k in own if k not in keep})
    print(f"initialised from {path}" + (f" (new neck layers: {fresh})" if fresh else ""))


def build_model(cfg, load_weights: bool = True) -> nn.Module:
    """cfg.model's backbone + neck (on the CPU), with train.init_from's weights and train.freeze_backbone applied.
    ``load_weights=False`` starts from random weights (no pretrained download, no init_from file)."""
    m = cfg.model
    model = build_backbone(m.backbone, m.embedding_size, m.pretrained if load_weights else None, m.dropout,
                           image_size=cfg.data.image_size)   # iresnet/mobilefacenet size their head for it
    if load_weights and cfg.train.init_from:
        _init_from(model, cfg.train.init_from)
    if cfg.train.freeze_backbone:   # two-stage recipe: only the neck learns, no backward through the backbone
        model.freeze_backbone()
    return model


def build_run(cfg, num_classes: int, device, steps_per_epoch: int = 1, *, model: nn.Module | None = None,
              load_weights: bool = True, distributed: bool = False, apply_on_cpu: bool = False) -> Run:
    """Model (build_model, unless ``model`` is given), criterion (fr_lib.losses.build_criterion(cfg.loss)),
    optimiser and schedule of cfg for ``num_classes`` training identities, on ``device``.

    The model is built first, then the criterion: with a seeded RNG their initial weights are the same in every
    run (train() seeds before). steps_per_epoch: optimiser steps per epoch (the schedule's unit). distributed:
    gather embeddings across ranks and wrap in DistributedDataParallel (a process group must exist).
    train.amp and train.channels_last apply on CUDA only, unless ``apply_on_cpu`` (the benchmark measures what
    they would give on a CPU)."""
    t_cfg, o_cfg = cfg.train, cfg.optim
    device = torch.device(device)
    on_device = device.type == "cuda" or apply_on_cpu
    if t_cfg.amp not in (*AMP_DTYPES, "none"):
        raise ValueError(f"unknown train.amp {t_cfg.amp!r}; choose bf16, fp16 or none")
    amp = t_cfg.amp if on_device else "none"
    channels_last = bool(t_cfg.channels_last and on_device)
    model = build_model(cfg, load_weights) if model is None else model
    criterion = build_criterion(cfg.loss, num_classes, cfg.model.embedding_size)
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    criterion.to(device)
    params = [p for p in list(model.parameters()) + list(criterion.parameters()) if p.requires_grad]
    optimizer = build_optimizer(params, o_cfg.optimizer, o_cfg.lr, o_cfg.weight_decay, o_cfg.momentum)
    schedule = LRSchedule(optimizer, o_cfg.scheduler, t_cfg.epochs, steps_per_epoch, o_cfg.warmup_epochs,
                          o_cfg.step_size, o_cfg.gamma, o_cfg.plateau_patience)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    step_module = TrainStep(torch.compile(model) if t_cfg.compile else model, criterion, gather=distributed)
    if distributed:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[device.index] if device.type == "cuda" else None)
    batch_augment = None
    if cfg.data.batch_augment:
        batch_augment = BatchAugment(model.normalization, cfg.data.image_size, cfg.data.augment).to(device)
    return Run(model, criterion, optimizer, schedule, scaler, step_module, params, device, amp, channels_last,
               o_cfg.grad_clip, batch_augment)


def _to_device(run: Run, images: torch.Tensor) -> torch.Tensor:
    return images.to(run.device, non_blocking=run.device.type == "cuda",
                     memory_format=torch.channels_last if run.channels_last else torch.preserve_format)


def train_step(run: Run, images: torch.Tensor, labels: torch.Tensor) -> float:
    """One optimiser step on a batch as the loader yields it: (B, 3, S, S) normalised float images, or uint8 ones
    when run.batch_augment augments and normalises them on the device; labels (B,) int64.

    Moves the batch to run.device (channels_last where it applies), forward + criterion under autocast,
    backward (loss-scaled for fp16), gradient clipping, optimiser and schedule step. Returns the loss; when it
    is NaN or infinite nothing is applied (train() then raises TrainingDiverged)."""
    images = images.to(run.device, non_blocking=run.device.type == "cuda")
    if run.batch_augment is not None:
        images = run.batch_augment(images)
    if run.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = labels.to(run.device, non_blocking=run.device.type == "cuda")
    with _autocast(run.device, run.amp):
        loss, _ = run.step_module(images, labels)
    value = float(loss.detach())
    if not math.isfinite(value):
        return value
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if run.grad_clip:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.params, run.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.schedule.step_batch()
    return value


@torch.no_grad()
def _embed(run: Run, loader):
    out, labels = [], []
    for images, y in loader:
        out.append(run.model(_to_device(run, images)).float().cpu())
        labels.append(torch.as_tensor(y))
    return torch.cat(out), torch.cat(labels)


@torch.no_grad()
def evaluate(run: Run, val_loader, open_loader, n_query: int, fpr: float) -> dict:
    """Val loss (batch-size weighted mean), closed-set val accuracy (NaN without ``criterion.logits``) and the
    open-set TPR at ``fpr`` of the first ``n_query`` images of open_loader (query) vs all of them (query +
    distractors; fr_lib.evaluation.metrics.identification_rate). Leaves model and criterion in eval mode."""
    model, criterion = run.model, run.criterion
    model.eval()
    criterion.eval()
    res = {"val_loss": math.nan, "val_accuracy": math.nan, f"tpr@fpr={fpr:g}": math.nan}
    logits_fn = getattr(criterion, "logits", None)
    if val_loader is not None:
        total, n, correct = 0.0, 0, 0
        with _autocast(run.device, run.amp):
            for images, labels in val_loader:
                labels = labels.to(run.device)
                emb = model(_to_device(run, images))
                total += float(criterion(emb, labels)) * len(labels)
                n += len(labels)
                if logits_fn is not None:
                    correct += int((logits_fn(emb).argmax(1) == labels).sum())
        res["val_loss"] = total / max(n, 1)
        if logits_fn is not None:
            res["val_accuracy"] = correct / max(n, 1)
    if open_loader is not None:
        with _autocast(run.device, run.amp):
            emb, labels = _embed(run, open_loader)
        res[f"tpr@fpr={fpr:g}"] = quick_tpr_at_fpr(emb[:n_query].numpy(), labels[:n_query].numpy(),
                                                   emb[n_query:].numpy(), fpr)
    return res


def quick_tpr_at_fpr(query, query_labels, distractors, fpr: float) -> float:
    """TPR at one FPR by the ID-rate protocol (docs/protocol.md); NaN (with a message) when the sets cannot give one."""
    try:
        return float(identification_rate(query, query_labels, distractors, fprs=(fpr,)).tprs[0])
    except ValueError as e:  # e.g. no positive pairs in a tiny held-out set
        print(f"open-set check skipped: {e}")
        return math.nan


def _loaders(data, d_cfg, ctx, device):
    """(training batch sampler, training loader, val loader | None, open-set loader | None); the evaluation
    loaders exist on rank 0 only."""
    sampler = build_batch_sampler(data.train.targets, d_cfg.batch_size, d_cfg.samples_per_class, d_cfg.seed)
    if ctx.enabled:
        sampler = D.RankBatchSampler(sampler, ctx.rank, ctx.world_size)
    if len(sampler) == 0:
        raise ValueError(f"no full training batch: {len(data.train)} images, batch_size {d_cfg.batch_size} "
                         f"x {ctx.world_size} process(es)")
    pin = device.type == "cuda"
    loader = make_loader(data.train, sampler, d_cfg.num_workers, pin)
    val_loader = open_loader = None
    if ctx.is_main and data.val is not None:
        # in label order: each batch holds whole identities, so pair/triplet losses find positives in it
        val_sampler = ShuffleBatchSampler(len(data.val), d_cfg.batch_size, shuffle=False, drop_last=False)
        val_loader = make_loader(data.val, val_sampler, d_cfg.num_workers, pin)
    if ctx.is_main and data.open_set is not None:
        open_loader = torch.utils.data.DataLoader(data.open_set, batch_size=d_cfg.batch_size, shuffle=False,
                                                  num_workers=d_cfg.num_workers, pin_memory=pin)
    return sampler, loader, val_loader, open_loader


def train(cfg, resume: bool = False, progress: bool = True) -> dict:
    """Train cfg's model; returns {'history', 'best_checkpoint', 'last_checkpoint', 'best_epoch', 'epochs_run',
    'stopped_early', 'output_dir', 'num_classes', 'rank', 'model' (the trained model, last epoch, eval mode),
    'criterion'}. ``resume`` continues from output_dir/last.pt (exactly: weights,
    optimiser, schedule, scaler, epoch, sampler and RNG states) and starts fresh when there is none.
    Raises TrainingDiverged on a NaN/inf loss (the checkpoints of the last good epoch stay as they are)."""
    t_cfg, d_cfg = cfg.train, cfg.data
    device_type = "cuda" if t_cfg.device.startswith("cuda") or (t_cfg.device == "auto" and torch.cuda.is_available()) \
        else "cpu"
    ctx = D.setup(device_type)
    device = resolve_device(t_cfg.device, ctx.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    out_dir = Path(cfg.output_dir)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"

    # the RNG draws, in this order: model weights, class weights (the same on every rank), then per rank
    _seed_everything(t_cfg.seed)
    model = build_model(cfg)
    data = build_training_data(d_cfg, model.normalization)
    if data.skipped and ctx.is_main:
        print(f"{len(data.skipped)} image(s) skipped by the scan, e.g. {data.skipped[0]}")
    sampler, loader, val_loader, open_loader = _loaders(data, d_cfg, ctx, device)
    run = build_run(cfg, data.num_classes, device, len(sampler), model=model, distributed=ctx.enabled)
    if ctx.enabled:  # same initial weights everywhere (DDP also broadcasts them), different augmentations
        _seed_everything(t_cfg.seed + ctx.rank)

    start_epoch, history = 0, []
    if resume and last_path.is_file():
        ckpt = load_checkpoint(last_path, map_location=device)
        run.model.load_state_dict(ckpt["model"])
        run.criterion.load_state_dict(ckpt["criterion"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.schedule.load_state_dict(ckpt["scheduler"])
        run.scaler.load_state_dict(ckpt["scaler"])
        start_epoch, history = ckpt["epoch"], list(ckpt["metrics"]["history"])
        restore_rng_state(ckpt["rng"] if ctx.world_size == 1 else ckpt["rng_per_rank"][ctx.rank])
        if ctx.is_main:
            print(f"resumed from {last_path} after epoch {start_epoch}")
    elif resume and ctx.is_main:
        print(f"no checkpoint at {last_path}: starting from scratch")

    # insightface .bin sets (train.val_targets, or the *.bin beside a pack): every rank checks they exist,
    # rank 0 decodes and evaluates them (fr_lib.evaluation.bin_verification)
    val_targets = VerificationTargets.for_training(d_cfg, t_cfg, model.normalization, load=ctx.is_main)
    fpr_key = f"tpr@fpr={t_cfg.open_set_fpr:g}"
    log = MetricsLog(out_dir, enabled=ctx.is_main, purge_step=start_epoch * len(sampler))
    log.write_csv(history)

    def evaluate_epoch() -> dict:
        """Metrics of the current weights, merged into the epoch's history row (computed on rank 0)."""
        metrics = {}
        if ctx.is_main:
            metrics.update(evaluate(run, val_loader, open_loader, data.n_query, t_cfg.open_set_fpr))
            # further per-epoch checks add their metrics to ``metrics`` here
            if val_targets:
                metrics.update(val_targets(run.model, device))
        return D.broadcast_object(metrics)

    if t_cfg.eval_at_start and not history:
        history.append({"epoch": 0, "lr": math.nan, "train_loss": math.nan, **evaluate_epoch(),
                        "epoch_seconds": 0.0})
        log.epoch(history)
        if ctx.is_main:
            print(f"untrained model: val loss {history[0]['val_loss']:.4f}, open-set {fpr_key.upper()} "
                  f"{history[0][fpr_key]:.3f}")

    stopped_early = False
    for epoch in range(start_epoch, t_cfg.epochs):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        run.model.train()
        run.criterion.train()
        total, n_seen = 0.0, 0
        _spare_draw()
        batches = iter(loader)   # draws the workers' base seed from the global torch RNG
        bar = progress_bar(batches, total=len(loader), desc=f"epoch {epoch + 1}/{t_cfg.epochs}",
                           disable=not (progress and ctx.is_main), leave=False, dynamic_ncols=True)
        for i, (images, labels) in enumerate(bar):
            loss = train_step(run, images, labels)
            if not math.isfinite(loss):
                raise TrainingDiverged(_diverged(loss, epoch, i, run, history, last_path))
            total += loss * len(labels)
            n_seen += len(labels)
            lr = run.optimizer.param_groups[0]["lr"]
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
            global_step = epoch * len(sampler) + i + 1
            if t_cfg.log_every and global_step % t_cfg.log_every == 0:
                log.scalars({"train/loss_step": loss, "train/lr": lr}, global_step)
        train_seconds = time.perf_counter() - t0
        row = {"epoch": epoch + 1, "lr": run.optimizer.param_groups[0]["lr"], "train_loss": total / max(n_seen, 1),
               **evaluate_epoch(), "epoch_seconds": time.perf_counter() - t0,
               "train_images_per_s": n_seen * ctx.world_size / max(train_seconds, 1e-9)}
        run.schedule.step_epoch(row["val_loss"])
        history.append(row)
        best = best_epoch(history)
        rng = capture_rng_state()
        rng_all = [rng] if ctx.world_size == 1 else _gather_objects(rng, ctx)
        if ctx.is_main:
            state = {"model": run.model.state_dict(), "criterion": run.criterion.state_dict(),
                     "optimizer": run.optimizer.state_dict(), "scheduler": run.schedule.state_dict(),
                     "scaler": run.scaler.state_dict(), "epoch": epoch + 1, "config": cfg.to_dict(),
                     "metrics": {"last": row, "history": history, "num_classes": data.num_classes,
                                 "classes": data.classes},
                     "rng": rng, "rng_per_rank": rng_all, "sampler": {"seed": d_cfg.seed, "epoch": epoch + 1}}
            if best == row["epoch"]:
                save_checkpoint(best_path, state)
            save_checkpoint(last_path, state)
            log.epoch(history)
            progress_write(_summary_line(row, t_cfg.epochs, fpr_key)
                           + (val_targets.summary(row) if val_targets else ""))
        D.barrier()
        if t_cfg.early_stopping_patience and row["epoch"] - (best or 0) >= t_cfg.early_stopping_patience:
            stopped_early = True
            if ctx.is_main:
                print(f"early stopping: no val-loss improvement for {t_cfg.early_stopping_patience} epoch(s)")
            break
    log.close()
    run.model.eval()
    return {"history": history, "best_checkpoint": best_path, "last_checkpoint": last_path,
            "best_epoch": best_epoch(history), "epochs_run": sum(h["epoch"] > 0 for h in history),
            "stopped_early": stopped_early, "output_dir": out_dir, "num_classes": data.num_classes,
            "rank": ctx.rank, "model": run.model, "criterion": run.criterion}


def _spare_draw() -> None:
    """One int64 from the global torch RNG at the start of every epoch, so that an epoch draws twice before its
    first batch (this and the loader iterator's base seed): the augmentation and dropout stream the recorded
    results were trained with. tqdm.auto's bar opened a second loader iterator of its own when handed a loader,
    the log-file bar does not; handing either bar the one iterator and drawing here makes them agree."""
    torch.empty((), dtype=torch.int64).random_()


def _diverged(loss: float, epoch: int, step: int, run: Run, history: list[dict], last_path: Path) -> str:
    kept = (f"last good checkpoint kept: {last_path} (after epoch {history[-1]['epoch']})"
            if any(h["epoch"] > 0 for h in history) and last_path.is_file() else "no checkpoint written yet")
    return (f"loss is {loss} at epoch {epoch + 1}, step {step + 1} (lr {run.optimizer.param_groups[0]['lr']:.3g}); "
            f"stopping: {kept}. Lower optim.lr or check the data.")


def _gather_objects(obj, ctx) -> list:
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def _summary_line(row: dict, epochs: int, fpr_key: str) -> str:
    return (f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}, "
            f"val acc {row['val_accuracy']:.3f}, open-set {fpr_key.upper()} {row[fpr_key]:.3f}, "
            f"{row['epoch_seconds']:.0f} s")
