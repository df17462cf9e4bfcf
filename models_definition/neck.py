"""The embedding neck and the backbone + neck module every experiment trains."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingNeck(nn.Module):
    """Pooled features (B, in_features) -> dropout -> linear -> batchnorm -> L2-normalised (B, embedding_size).

    The linear layer has no bias: the batchnorm right after it has one (as in facenet-pytorch's
    InceptionResnetV1 and insightface's ``features`` BN).
    """

    def __init__(self, in_features: int, embedding_size: int = 512, dropout: float = 0.0,
                 linear: nn.Linear | None = None, bn: nn.BatchNorm1d | None = None):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = linear if linear is not None else nn.Linear(in_features, embedding_size, bias=False)
        self.bn = bn if bn is not None else nn.BatchNorm1d(embedding_size)
        self.in_features, self.embedding_size = in_features, embedding_size

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.linear(self.dropout(features)))
        # normalise in fp32: under fp16/bf16 autocast the squared norm of a 512-d vector loses precision
        return F.normalize(x.float(), p=2.0, dim=1)


class EmbeddingModel(nn.Module):
    """backbone (images -> pooled features) followed by an EmbeddingNeck.

    Attributes: ``backbone_name``, ``embedding_size``, ``normalization`` ('imagenet' | 'facenet': which pixel
    standardisation the backbone expects, see fr_lib.data.build_transforms), ``default_image_size`` (px).
    """

    def __init__(self, backbone: nn.Module, neck: EmbeddingNeck, *, backbone_name: str, normalization: str,
                 default_image_size: int):
        super().__init__()
        self.backbone, self.neck = backbone, neck
        self.backbone_name, self.normalization = backbone_name, normalization
        self.default_image_size = default_image_size
        self.embedding_size = neck.embedding_size
        self.backbone_frozen = False

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) float, standardised -> (B, embedding_size) float32 with unit L2 norm."""
        return self.neck(self.backbone(images))

    def freeze_backbone(self, frozen: bool = True) -> "EmbeddingModel":
        """Two-stage recipe: stop gradients into the backbone and keep its batchnorm statistics fixed
        (the backbone stays in eval mode even while the model trains); only the neck learns."""
        self.backbone_frozen = frozen
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        return self.train(self.training)

    def train(self, mode: bool = True) -> "EmbeddingModel":
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self
