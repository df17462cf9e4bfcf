"""Embedding models by name: trained runs, random-weight chance rows and pretrained baselines.

``resolve_embedder(name) -> (model, meta)`` (fr_lib.embedders.resolve) is the one entry point; the pretrained
baselines that are not plain torch modules (dlib's ResNet) live beside it.
"""
from fr_lib.embedders.resolve import embedder_choices, resolve_embedder

__all__ = ["embedder_choices", "resolve_embedder"]
