"""Optimiser and learning-rate schedule: linear warmup, then cosine | step | ReduceLROnPlateau | constant."""
from __future__ import annotations

import math

import torch


def build_optimizer(params, name: str, lr: float, weight_decay: float = 0.0, momentum: float = 0.9):
    """'sgd' (momentum, nesterov=False) or 'adamw'. weight_decay is decoupled for AdamW, L2 for SGD."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose 'sgd' or 'adamw'")


SCHEDULERS = ("cosine", "step", "plateau", "none")


class LRSchedule:
    """Per-step learning-rate factor on top of the optimiser's lr.

    warmup: linear over the first ``warmup_epochs * steps_per_epoch`` steps, from lr/warmup_steps up to lr.
    Then 'cosine' (per step, from lr down to 0 at the last step), 'step' (x gamma every step_size epochs),
    'none' (constant), or 'plateau' (torch's ReduceLROnPlateau on the validation loss, once per epoch,
    x gamma after ``plateau_patience`` epochs without improvement; never during warmup).
    Call ``step_batch()`` after each optimiser step and ``step_epoch(val_loss)`` after each epoch.
    """

    def __init__(self, optimizer, scheduler: str, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0.0,
                 step_size: int = 10, gamma: float = 0.1, plateau_patience: int = 2):
        if scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {SCHEDULERS}")
        self.name, self.steps_per_epoch = scheduler, max(1, steps_per_epoch)
        self.total = max(1, epochs * self.steps_per_epoch)
        self.warmup = int(round(warmup_epochs * self.steps_per_epoch))
        warmup, total, spe = self.warmup, self.total, self.steps_per_epoch

        def factor(step: int) -> float:  # a plain function: LambdaLR.state_dict skips functions
            f = min(1.0, (step + 1) / warmup) if warmup else 1.0
            if scheduler == "cosine" and step >= warmup:
                f *= 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
            elif scheduler == "step":
                f *= gamma ** (step // spe // step_size)
            return f

        self.lambda_lr = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        self.plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=gamma,
                                                                   patience=plateau_patience)
                        if scheduler == "plateau" else None)

    def step_batch(self) -> None:
        # with 'plateau' the per-step factor stops after warmup so it never undoes the plateau's reductions
        if self.plateau is None or self.lambda_lr.last_epoch < self.warmup:
            self.lambda_lr.step()

    def step_epoch(self, val_loss: float) -> None:
        if self.plateau is not None and self.lambda_lr.last_epoch >= self.warmup and math.isfinite(val_loss):
            self.plateau.step(val_loss)

    def state_dict(self) -> dict:
        return {"lambda_lr": self.lambda_lr.state_dict(),
                "plateau": self.plateau.state_dict() if self.plateau is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.lambda_lr.load_state_dict(state["lambda_lr"])
        if self.plateau is not None and state.get("plateau") is not None:
            self.plateau.load_state_dict(state["plateau"])

