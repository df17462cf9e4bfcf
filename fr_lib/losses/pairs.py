"""Pair / triplet criteria without class weights (pytorch-metric-learning loss + optional miner).

Distances are Euclidean between L2-normalised embeddings (pml's default LpDistance), so they lie in [0, 2]
and margins are in those units.
"""
from __future__ import annotations

import torch
from torch import nn


class PairBasedLoss(nn.Module):
    """``loss(embeddings, labels, miner(embeddings, labels))`` in fp32 with autocast off. No ``logits``."""

    def __init__(self, pml_loss: nn.Module, miner: nn.Module | None = None):
        super().__init__()
        self.loss, self.miner = pml_loss, miner

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(embeddings.device.type, enabled=False):
            embeddings = embeddings.float()
            indices = self.miner(embeddings, labels) if self.miner is not None else None
            return self.loss(embeddings, labels, indices)


TRIPLET_MINING = ("batch_hard", "semi_hard", "all")


def triplet(num_classes: int, embedding_size: int, margin: float = 0.2, mining: str = "batch_hard") -> PairBasedLoss:
    """Triplet margin loss max(d(a,p) - d(a,n) + margin, 0), averaged over the triplets with non-zero loss.

    mining: 'batch_hard' (per anchor the farthest positive and the nearest negative in the batch, Hermans et al.
    2017), 'semi_hard' (every triplet with d(a,p) < d(a,n) < d(a,p) + margin, FaceNet's criterion as pml's
    TripletMarginMiner implements it), 'all' (every triplet of the batch). Needs P x K batches (K >= 2).
    num_classes and embedding_size are unused (no class weights).
    """
    from pytorch_metric_learning import losses, miners

    if mining not in TRIPLET_MINING:
        raise ValueError(f"unknown triplet mining {mining!r}; choose one of {TRIPLET_MINING}")
    miner = {"batch_hard": lambda: miners.BatchHardMiner(),
             "semi_hard": lambda: miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard"),
             "all": lambda: None}[mining]()
    return PairBasedLoss(losses.TripletMarginLoss(margin=margin), miner)


def contrastive(num_classes: int, embedding_size: int, margin: float = 1.0) -> PairBasedLoss:
    """Contrastive loss over every pair of the batch: positives max(d, 0), negatives max(margin - d, 0); each
    part averaged over its non-zero pairs, then summed (pml's ContrastiveLoss with pos_margin=0,
    neg_margin=margin)."""
    from pytorch_metric_learning import losses

    return PairBasedLoss(losses.ContrastiveLoss(pos_margin=0.0, neg_margin=margin))
