"""Backbones by name plus an embedding neck: images (B, 3, H, W) -> L2-normalised embeddings (B, embedding_size).

    >>> model = build_backbone("efficientnet_b0", embedding_size=512)          # any timm name
    >>> model = build_backbone("inception_resnet_v1", pretrained="vggface2")   # facenet-pytorch
    >>> model = build_backbone("iresnet50", image_size=112)   # arcface_torch's IResNet-18/34/50/100, mobilefacenet

Nothing about losses lives here: class weights belong to the criterion (fr_lib.losses).
"""
from models_definition.backbones import build_backbone, list_backbones
from models_definition.neck import EmbeddingModel, EmbeddingNeck

__all__ = ["build_backbone", "list_backbones", "EmbeddingModel", "EmbeddingNeck"]
