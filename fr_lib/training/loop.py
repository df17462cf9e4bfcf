"""One training loop for every loss: ``train(cfg)`` with cfg a config.ExperimentConfig (or anything shaped like it).

    model = build_backbone(...)                   # images -> L2-normalised embeddings
    criterion = build_criterion(...)              # (embeddings, labels) -> loss; may hold class weights
    for images, labels in loader:                 # triplet: P x K batches from data.samples_per_class
        loss = criterion(model(images), labels)   # under DDP the embeddings are gathered from every rank first

Per epoch: train loss, val loss and closed-set val accuracy (``criterion.logits`` where the criterion has class
weights), a quick open-set TPR@FPR (query vs distractors of held-out identities); checkpoints ``best.pt`` (min
val loss) and ``last.pt`` (the resume point), metrics.csv and TensorBoard events under cfg.output_dir.
Launch several processes with ``torchrun --nproc_per_node N -m fr_lib train ...``.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fr_lib.training import distributed as D
from fr_lib.training.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from fr_lib.losses import build_criterion
from fr_lib.training.schedule import LRSchedule, build_optimizer
from fr_lib.training.data import build_training_data, make_loader
from fr_lib.training.log import MetricsLog, best_epoch


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


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """torch.device for a config's train.device (fr_lib.device.resolve_device_name; 'cuda' -> this rank's GPU)."""
    from fr_lib.device import resolve_device_name

    return torch.device(resolve_device_name(name, local_rank))


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _autocast(device: torch.device, amp: str):
    """bf16 / fp16 autocast on CUDA only (CPU bf16 ranges from ~18x slower without bf16 units to ~1-2x faster
    with avx512_bf16: benchmarks/train_step.py)."""
    if device.type != "cuda" or amp == "none":
        return nullcontext()
    if amp not in ("bf16", "fp16"):
        raise ValueError(f"unknown amp {amp!r}; choose bf16, fp16 or none")
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


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


@torch.no_grad()
def _embed(model, loader, device, channels_last: bool):
    out, labels = [], []
    for images, y in loader:
        images = images.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
        out.append(model(images).float().cpu())
        labels.append(torch.as_tensor(y))
    return torch.cat(out), torch.cat(labels)


@torch.no_grad()
def evaluate(model, criterion, val_loader, open_loader, n_query: int, fpr: float, device, amp: str,
             channels_last: bool) -> dict:
    """Val loss (batch-size weighted mean), closed-set val accuracy (NaN without ``criterion.logits``) and the
    open-set TPR at ``fpr`` of query images vs query + distractor images (fr_lib.evaluation.metrics.identification_rate)."""
    model.eval()
    criterion.eval()
    res = {"val_loss": math.nan, "val_accuracy": math.nan, f"tpr@fpr={fpr:g}": math.nan}
    logits_fn = getattr(criterion, "logits", None)
    if val_loader is not None:
        total, n, correct = 0.0, 0, 0
        with _autocast(device, amp):
            for images, labels in val_loader:
                images = images.to(device, memory_format=torch.channels_last if channels_last
                                   else torch.preserve_format)
                labels = labels.to(device)
                emb = model(images)
                total += float(criterion(emb, labels)) * len(labels)
                n += len(labels)
                if logits_fn is not None:
                    correct += int((logits_fn(emb).argmax(1) == labels).sum())
        res["val_loss"] = total / max(n, 1)
        if logits_fn is not None:
            res["val_accuracy"] = correct / max(n, 1)
    if open_loader is not None:
        with _autocast(device, amp):
            emb, labels = _embed(model, open_loader, device, channels_last)
        res[f"tpr@fpr={fpr:g}"] = quick_tpr_at_fpr(emb[:n_query].numpy(), labels[:n_query].numpy(),
                                                   emb[n_query:].numpy(), fpr)
    return res


def quick_tpr_at_fpr(query, query_labels, distractors, fpr: float) -> float:
    """TPR at one FPR by the ID-rate protocol (docs/protocol.md); NaN (with a message) when the sets cannot give one."""
    from fr_lib.evaluation.metrics import identification_rate

    try:
        return float(identification_rate(query, query_labels, distractors, fprs=(fpr,)).tprs[0])
    except ValueError as e:  # e.g. no positive pairs in a tiny held-out set
        print(f"open-set check skipped: {e}")
        return math.nan


def train(cfg, resume: bool = False, progress: bool = True) -> dict:
    """Train cfg's model; returns {'history', 'best_checkpoint', 'last_checkpoint', 'best_epoch', 'epochs_run',
    'stopped_early', 'output_dir', 'num_classes', 'rank', 'model' (the trained model, last epoch, eval mode),
    'criterion'}. ``resume`` continues from output_dir/last.pt (exactly: weights,
    optimiser, schedule, scaler, epoch, sampler and RNG states) and starts fresh when there is none.
    Raises TrainingDiverged on a NaN/inf loss (the checkpoints of the last good epoch stay as they are)."""
    t_cfg, d_cfg, o_cfg = cfg.train, cfg.data, cfg.optim
    device_type = "cuda" if t_cfg.device.startswith("cuda") or (t_cfg.device == "auto" and torch.cuda.is_available()) \
        else "cpu"
    ctx = D.setup(device_type)
    device = resolve_device(t_cfg.device, ctx.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    channels_last = t_cfg.channels_last and device.type == "cuda"
    out_dir = Path(cfg.output_dir)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    _seed_everything(t_cfg.seed)

    from models_definition import build_backbone

    model = build_backbone(cfg.model.backbone, cfg.model.embedding_size, cfg.model.pretrained, cfg.model.dropout)
    data = build_training_data(d_cfg, model.normalization)
    if data.skipped and ctx.is_main:
        print(f"{len(data.skipped)} image(s) skipped by the scan, e.g. {data.skipped[0]}")
    if t_cfg.init_from:
        _init_from(model, t_cfg.init_from)
    if t_cfg.freeze_backbone:
        model.freeze_backbone()
    criterion = build_criterion(cfg.loss.name, data.num_classes, cfg.model.embedding_size, margin=cfg.loss.margin,
                                scale=cfg.loss.scale, label_smoothing=cfg.loss.label_smoothing,
                                mining=cfg.loss.mining)
    if ctx.enabled:  # same initial weights everywhere (DDP also broadcasts them), different augmentations
        _seed_everything(t_cfg.seed + ctx.rank)
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    criterion.to(device)

    from fr_lib.data import ShuffleBatchSampler, build_batch_sampler

    sampler = build_batch_sampler(data.train.targets, d_cfg.batch_size, d_cfg.samples_per_class, d_cfg.seed)
    if ctx.enabled:
        sampler = D.RankBatchSampler(sampler, ctx.rank, ctx.world_size)
    if len(sampler) == 0:
        raise ValueError(f"no full training batch: {len(data.train)} images, batch_size {d_cfg.batch_size} "
                         f"x {ctx.world_size} process(es)")
    pin = device.type == "cuda"
    loader = make_loader(data.train, sampler, d_cfg.num_workers, pin)
    batch_augment = None
    if d_cfg.batch_augment:
        from fr_lib.data.batch_augment import BatchAugment

        batch_augment = BatchAugment(model.normalization, d_cfg.image_size, d_cfg.augment).to(device)
    val_loader = open_loader = None
    if ctx.is_main and data.val is not None:
        # in label order: each batch holds whole identities, so pair/triplet losses find positives in it
        val_sampler = ShuffleBatchSampler(len(data.val), d_cfg.batch_size, shuffle=False, drop_last=False)
        val_loader = make_loader(data.val, val_sampler, d_cfg.num_workers, pin)
    if ctx.is_main and data.open_set is not None:
        open_loader = torch.utils.data.DataLoader(data.open_set, batch_size=d_cfg.batch_size, shuffle=False,
                                                  num_workers=d_cfg.num_workers, pin_memory=pin)

    params = [p for p in list(model.parameters()) + list(criterion.parameters()) if p.requires_grad]
    optimizer = build_optimizer(params, o_cfg.optimizer, o_cfg.lr, o_cfg.weight_decay, o_cfg.momentum)
    schedule = LRSchedule(optimizer, o_cfg.scheduler, t_cfg.epochs, len(sampler), o_cfg.warmup_epochs,
                          o_cfg.step_size, o_cfg.gamma, o_cfg.plateau_patience)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and t_cfg.amp == "fp16")

    step_module = TrainStep(torch.compile(model) if t_cfg.compile else model, criterion, gather=ctx.enabled)
    if ctx.enabled:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[device.index] if device.type == "cuda" else None)

    start_epoch, history = 0, []
    if resume and last_path.is_file():
        ckpt = load_checkpoint(last_path, map_location=device)
        model.load_state_dict(ckpt["model"])
        criterion.load_state_dict(ckpt["criterion"])
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, history = ckpt["epoch"], list(ckpt["metrics"]["history"])
        restore_rng_state(ckpt["rng"] if ctx.world_size == 1 else ckpt["rng_per_rank"][ctx.rank])
        if ctx.is_main:
            print(f"resumed from {last_path} after epoch {start_epoch}")
    elif resume and ctx.is_main:
        print(f"no checkpoint at {last_path}: starting from scratch")

    fpr_key = f"tpr@fpr={t_cfg.open_set_fpr:g}"
    log = MetricsLog(out_dir, enabled=ctx.is_main, purge_step=start_epoch * len(sampler))
    log.write_csv(history)

    def run_eval() -> dict:
        res = evaluate(model, criterion, val_loader, open_loader, data.n_query, t_cfg.open_set_fpr, device,
                       t_cfg.amp, channels_last) if ctx.is_main else None
        return D.broadcast_object(res)

    if t_cfg.eval_at_start and not history:
        history.append({"epoch": 0, "lr": math.nan, "train_loss": math.nan, **run_eval(), "epoch_seconds": 0.0})
        log.epoch(history)
        if ctx.is_main:
            print(f"untrained model: val loss {history[0]['val_loss']:.4f}, open-set {fpr_key.upper()} "
                  f"{history[0][fpr_key]:.3f}")

    from tqdm.auto import tqdm

    stopped_early = False
    for epoch in range(start_epoch, t_cfg.epochs):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        model.train()
        criterion.train()
        total, n_seen = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{t_cfg.epochs}", disable=not (progress and ctx.is_main),
                   leave=False, dynamic_ncols=True)
        for i, (images, labels) in enumerate(bar):
            images = images.to(device, non_blocking=pin)
            if batch_augment is not None:
                images = batch_augment(images)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = labels.to(device, non_blocking=pin)
            with _autocast(device, t_cfg.amp):
                loss, _ = step_module(images, labels)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                kept = (f"last good checkpoint kept: {last_path} (after epoch {history[-1]['epoch']})"
                        if any(h["epoch"] > 0 for h in history) and last_path.is_file()
                        else "no checkpoint written yet")
                raise TrainingDiverged(f"loss is {loss_value} at epoch {epoch + 1}, step {i + 1} (lr "
                                       f"{optimizer.param_groups[0]['lr']:.3g}); stopping: {kept}. Lower optim.lr "
                                       f"or check the data.")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if o_cfg.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, o_cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            schedule.step_batch()
            total += loss_value * len(labels)
            n_seen += len(labels)
            global_step = epoch * len(sampler) + i + 1
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
            if t_cfg.log_every and global_step % t_cfg.log_every == 0:
                log.scalars({"train/loss_step": loss_value, "train/lr": optimizer.param_groups[0]["lr"]},
                            global_step)
        train_seconds = time.perf_counter() - t0
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "train_loss": total / max(n_seen, 1),
               **run_eval(), "epoch_seconds": time.perf_counter() - t0,
               "train_images_per_s": n_seen * ctx.world_size / max(train_seconds, 1e-9)}
        schedule.step_epoch(row["val_loss"])
        history.append(row)
        best = best_epoch(history)
        improved = best == row["epoch"]
        rng = capture_rng_state()
        rng_all = [rng] if ctx.world_size == 1 else _gather_objects(rng, ctx)
        if ctx.is_main:
            state = {"model": model.state_dict(), "criterion": criterion.state_dict(),
                     "optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict(),
                     "scaler": scaler.state_dict(), "epoch": epoch + 1, "config": cfg.to_dict(),
                     "metrics": {"last": row, "history": history, "num_classes": data.num_classes,
                                 "classes": data.classes},
                     "rng": rng, "rng_per_rank": rng_all, "sampler": {"seed": d_cfg.seed, "epoch": epoch + 1}}
            if improved:
                save_checkpoint(best_path, state)
            save_checkpoint(last_path, state)
            log.epoch(history)
            tqdm.write(_summary_line(row, t_cfg.epochs, fpr_key))
        D.barrier()
        if t_cfg.early_stopping_patience and row["epoch"] - (best or 0) >= t_cfg.early_stopping_patience:
            stopped_early = True
            if ctx.is_main:
                print(f"early stopping: no val-loss improvement for {t_cfg.early_stopping_patience} epoch(s)")
            break
    log.close()
    model.eval()
    return {"history": history, "best_checkpoint": best_path, "last_checkpoint": last_path,
            "best_epoch": best_epoch(history), "epochs_run": sum(h["epoch"] > 0 for h in history),
            "stopped_early": stopped_early,
            "output_dir": out_dir, "num_classes": data.num_classes, "rank": ctx.rank,
            "model": model, "criterion": criterion}


def _gather_objects(obj, ctx) -> list:
    import torch.distributed as dist

    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def _summary_line(row: dict, epochs: int, fpr_key: str) -> str:
    return (f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}, "
            f"val acc {row['val_accuracy']:.3f}, open-set {fpr_key.upper()} {row[fpr_key]:.3f}, "
            f"{row['epoch_seconds']:.0f} s")
