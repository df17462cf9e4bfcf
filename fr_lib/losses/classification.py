"""Criteria with class weights: softmax cross-entropy, ArcFace and CosFace. Each exposes ``logits(embeddings)``."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _fp32(embeddings: torch.Tensor) -> torch.Tensor:
    return embeddings.float()


class SoftmaxCrossEntropy(nn.Module):
    """Linear classifier (with bias) on ``scale * embeddings`` followed by cross-entropy with label smoothing.

    embeddings (B, D) (unit-norm from the model), labels (B,) -> scalar mean loss in nats.
    scale multiplies the unit-norm embeddings before the classifier (1 = plain linear classifier); a larger
    scale lets the softmax get confident before the class weights have grown, which matters on short runs.
    """

    def __init__(self, num_classes: int, embedding_size: int, label_smoothing: float = 0.0, scale: float = 1.0):
        super().__init__()
        self.classifier = nn.Linear(embedding_size, num_classes)
        self.label_smoothing, self.scale = label_smoothing, scale

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, num_classes) unnormalised class scores, fp32."""
        with torch.autocast(embeddings.device.type, enabled=False):
            return self.classifier(_fp32(embeddings) * self.scale)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings), labels, label_smoothing=self.label_smoothing)


class MarginSoftmaxLoss(nn.Module):
    """ArcFace / CosFace through pytorch-metric-learning, with its class weights ``loss.W`` (D, C) kept fp32.

    pml's losses cast W to the embeddings' dtype in place on every call, so under bf16/fp16 autocast they would
    silently turn the trainable fp32 weights into half precision: we hand them fp32 embeddings with autocast off.
    ``logits`` returns ``scale * cos(theta)`` (no margin): the class scores used for closed-set accuracy.
    """

    def __init__(self, pml_loss: nn.Module):
        super().__init__()
        self.loss = pml_loss

    @property
    def weight(self) -> torch.Tensor:
        """Class centres (num_classes, D), not normalised."""
        return self.loss.W.t()

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        with torch.autocast(embeddings.device.type, enabled=False):
            return self.loss.get_logits(_fp32(embeddings))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(embeddings.device.type, enabled=False):
            return self.loss(_fp32(embeddings), labels)


def arcface(num_classes: int, embedding_size: int, margin: float = 0.5, scale: float = 64.0) -> MarginSoftmaxLoss:
    """ArcFace (Deng et al. 2019): logit of the true class s*cos(theta + m). margin m in RADIANS (0.5 rad =
    28.6 deg), scale s dimensionless. pml's ArcFaceLoss takes the margin in degrees: converted here."""
    from pytorch_metric_learning.losses import ArcFaceLoss

    return MarginSoftmaxLoss(ArcFaceLoss(num_classes, embedding_size, margin=math.degrees(margin), scale=scale))


def cosface(num_classes: int, embedding_size: int, margin: float = 0.35, scale: float = 64.0) -> MarginSoftmaxLoss:
    """CosFace (Wang et al. 2018): logit of the true class s*(cos(theta) - m); margin m in cosine units."""
    from pytorch_metric_learning.losses import CosFaceLoss

    return MarginSoftmaxLoss(CosFaceLoss(num_classes, embedding_size, margin=margin, scale=scale))
