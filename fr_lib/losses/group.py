"""The group loss (Elezi, Vascon, Torcinovich, Pelillo and Leal-Taixe, "The Group Loss for Deep Metric Learning",
ECCV 2020), following the authors' reference implementation (github.com/dvl-tum/group_loss: gtg.py, dynamics.py,
train.py).

    >>> criterion = build_criterion("group", num_classes=1292, embedding_size=512)
    >>> loss = criterion(embeddings, labels)    # n x m batch: (B, D) embeddings, (B,) labels in [0, C)

Per batch:
1. priors X0 (B, C): softmax(logits / temperature) of the criterion's linear classifier (its class weights are
   optimised with the model); the first ``labeled_per_class`` samples of each class in the batch are anchors whose
   prior is their one-hot label;
2. W (B, B): Pearson correlation of the embeddings (each row centred over its D features, then cosine), negative
   values set to 0; the diagonal stays 1 as in the reference code;
3. replicator dynamics, ``num_iterations`` times: x_i <- x_i * (W X)_i / (x_i . (W X)_i) (row-normalised, so
   every row stays on the simplex);
4. loss = NLL(log(X + 1e-12), labels) + cross-entropy(logits, labels), as the reference train.py adds both.

Defaults: one replicator iteration (the reference's num_iter_gtg), one labelled anchor per class (with m = 2
samples per class the other one is refined from its prior; the reference labels 2-3 of 6-9), and the batch the
earlier face project found best: n = 24 classes x m = 2 samples (data.batch_size 48, data.samples_per_class 2).
Temperature: the reference divides raw logits of un-normalised BN-Inception features by 24-79 (per dataset); our
embeddings are unit vectors, so the CE logits are ``scale * (W e) + b`` and the priors use temperature = scale,
i.e. the softmax of the unscaled classifier: soft priors for the dynamics, sharp logits for the CE term.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pearson_similarity(embeddings: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, B) Pearson correlation of the rows (centred over their D features), negatives set to 0."""
    x = embeddings - embeddings.mean(dim=1, keepdim=True)
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return F.relu(x @ x.t())


def replicator_dynamics(W: torch.Tensor, X: torch.Tensor, num_iterations: int) -> torch.Tensor:
    """Discrete replicator dynamics: W (B, B) non-negative similarities, X (B, C) rows on the simplex ->
    X after ``num_iterations`` steps of X <- X * (W X), each row divided by its sum."""
    for _ in range(num_iterations):
        X = X * (W @ X)
        X = X / X.sum(dim=1, keepdim=True).clamp_min(1e-30)
    return X


def anchor_mask(labels: torch.Tensor, labeled_per_class: int) -> torch.Tensor:
    """(B,) bool: True for the first ``labeled_per_class`` samples of each label in batch order (the reference's
    get_labeled_and_unlabeled_points)."""
    same = labels[:, None] == labels[None, :]
    earlier = torch.tril(same, diagonal=-1).sum(dim=1)  # samples of the same label before this one
    return earlier < labeled_per_class


class GroupLoss(nn.Module):
    """Group loss with its class weights (``classifier``: Linear(D, C) with bias) for the priors and the CE term.

    embeddings (B, D), labels (B,) int64 in [0, num_classes) -> scalar loss in nats. ``logits(embeddings)`` gives
    the (B, C) class scores used for closed-set accuracy.
    """

    def __init__(self, num_classes: int, embedding_size: int, scale: float = 16.0, temperature: float | None = None,
                 num_iterations: int = 1, labeled_per_class: int = 1, group_weight: float = 1.0):
        super().__init__()
        if num_iterations < 1 or labeled_per_class < 0:
            raise ValueError(f"group loss needs num_iterations >= 1 and labeled_per_class >= 0, got "
                             f"{num_iterations} and {labeled_per_class}")
        self.classifier = nn.Linear(embedding_size, num_classes)
        self.scale = float(scale)
        self.temperature = float(scale if temperature is None else temperature)
        self.num_iterations, self.labeled_per_class, self.group_weight = num_iterations, labeled_per_class, group_weight

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, num_classes) = classifier(scale * embeddings), fp32."""
        with torch.autocast(embeddings.device.type, enabled=False):
            return self.classifier(embeddings.float() * self.scale)

    def refined_probabilities(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, D), (B,) -> (B, C) class assignments after the replicator dynamics (rows sum to 1)."""
        with torch.autocast(embeddings.device.type, enabled=False):
            return self._refine(embeddings.float(), labels, self.logits(embeddings))

    def _refine(self, embeddings, labels, logits):
        priors = F.softmax(logits / self.temperature, dim=1)
        anchors = anchor_mask(labels, self.labeled_per_class)
        one_hot = F.one_hot(labels, priors.shape[1]).to(priors.dtype)
        priors = torch.where(anchors[:, None], one_hot, priors)
        return replicator_dynamics(pearson_similarity(embeddings), priors, self.num_iterations)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(embeddings.device.type, enabled=False):
            logits = self.logits(embeddings)
            probs = self._refine(embeddings.float(), labels, logits)
            return (self.group_weight * F.nll_loss(torch.log(probs + 1e-12), labels)
                    + F.cross_entropy(logits, labels))


def group(num_classes: int, embedding_size: int, scale: float = 16.0) -> GroupLoss:
    """Factory for build_criterion ('group'): scale multiplies the unit embeddings before the classifier
    (LossConfig.scale; the priors' temperature follows it)."""
    return GroupLoss(num_classes, embedding_size, scale=scale)
