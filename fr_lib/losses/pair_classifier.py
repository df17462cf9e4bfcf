"""A learned pair classifier (siamese network with binary cross-entropy, Koch et al. 2015's twin network).

    >>> criterion = build_criterion("bce", num_classes=0, embedding_size=512)
    >>> loss = criterion(embeddings, labels)              # P x K batch: (B, D) embeddings, (B,) identity labels
    >>> p = criterion.pair_probability(e1, e2)            # (N, D), (N, D) -> (N,) P(same identity) in [0, 1]

The head scores a pair from the element-wise L1 distance of its two embeddings: logit = w . |e1 - e2| + b,
probability = sigmoid(logit). Its weights ``head.weight`` (1, D) and ``head.bias`` (1,) live in the criterion, so
they are trained with the model and saved in the checkpoint's 'criterion' state (load_pair_classifier).

Balance: a P x K batch holds P*K*(K-1)/2 same-identity pairs and far more different-identity ones (8 x 4: 48 vs
448); an unweighted mean over all pairs is dominated by the negatives and pushes every distance up. Every pair
of the batch (i < j) is used, and each class of pairs is weighted so that positives and negatives contribute half
of the loss each: loss = 0.5 * mean BCE(positives) + 0.5 * mean BCE(negatives). Weights rather than sampled
negatives keep the loss deterministic (no RNG draw inside the criterion) and use every negative.
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn


class PairClassifierLoss(nn.Module):
    """BCE on every pair of a batch through a linear head on |e1 - e2|; positives and negatives weighted 1/2 each.

    embeddings (B, D) (unit-norm from the model), labels (B,) int -> scalar loss in nats. A batch with no
    same-identity pair (plain shuffling instead of P x K) gives the negatives' term only: train it with
    ``data.samples_per_class >= 2``. No ``logits`` (no class weights): closed-set accuracy is NaN in the history.

    init_scale: the head starts as logit = init_scale * (1 / sqrt(pi) - |e1 - e2|.sum() / sqrt(D)), so that identical
    embeddings score sigmoid(+2.3) = 0.9 and two random unit vectors (L1 distance ~1.128 sqrt(D)) sigmoid(-2.3) =
    0.1 with init_scale 4. A random-sign default init would start the embedding gradients in random directions.
    """

    def __init__(self, embedding_size: int, init_scale: float = 4.0):
        super().__init__()
        self.head = nn.Linear(embedding_size, 1)
        # two random unit vectors in D dimensions: |e1 - e2| entries ~ |N(0, 2/D)|, L1 distance ~ 2 sqrt(D / pi)
        with torch.no_grad():
            self.head.weight.fill_(-init_scale / math.sqrt(embedding_size))
            self.head.bias.fill_(init_scale / math.sqrt(math.pi))  # logit 0 halfway between identical and random

    def pair_logit(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        """(..., D), (..., D) (broadcast) -> (...) logit of 'same identity', fp32."""
        with torch.autocast(e1.device.type, enabled=False):
            return self.head((e1.float() - e2.float()).abs()).squeeze(-1)

    def pair_probability(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        """(..., D), (..., D) -> (...) probability in [0, 1] that the two embeddings show the same identity."""
        return torch.sigmoid(self.pair_logit(e1, e2))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        i, j = torch.triu_indices(len(labels), len(labels), offset=1, device=labels.device)
        same = labels[i] == labels[j]
        bce = F.binary_cross_entropy_with_logits(self.pair_logit(embeddings[i], embeddings[j]), same.float(),
                                                 reduction="none")
        parts = [bce[mask].mean() for mask in (same, ~same) if mask.any()]
        if not parts:  # a batch of one image has no pair
            return bce.sum()
        return sum(parts) / len(parts)


def bce(num_classes: int, embedding_size: int) -> PairClassifierLoss:
    """Factory for build_criterion ('bce'); num_classes is unused (no class weights)."""
    return PairClassifierLoss(embedding_size)


def load_pair_classifier(checkpoint_path: str | os.PathLike, device="cpu") -> PairClassifierLoss:
    """The trained head of a 'bce' run: rebuilt from the checkpoint's config and loaded from its 'criterion'
    state (torch.load with weights_only=True). ValueError naming the loss when the run was not trained with 'bce'."""
    from fr_lib.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint_path)
    loss_name = ckpt.get("config", {}).get("loss", {}).get("name")
    if loss_name != "bce" or "criterion" not in ckpt:
        raise ValueError(f"{checkpoint_path} was trained with loss {loss_name!r}, not 'bce': it has no pair "
                         "classifier head; score with cosine similarity instead (--score cosine)")
    head = PairClassifierLoss(int(ckpt["config"]["model"]["embedding_size"]))
    head.load_state_dict(ckpt["criterion"])
    return head.to(device).eval()
