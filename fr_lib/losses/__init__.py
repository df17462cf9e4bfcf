"""Criteria called like pytorch-metric-learning losses: ``loss = criterion(embeddings, labels)``.

    >>> criterion = build_criterion("arcface", num_classes=1292, embedding_size=512)   # s=64, m=0.5 rad
    >>> loss = criterion(embeddings, labels)        # embeddings (B, D) float, labels (B,) int64 in [0, C)
    >>> logits = criterion.logits(embeddings)      # (B, C), criteria that hold class weights only

Class weights belong to the criterion and are optimised with the model. Every criterion computes in fp32 with
autocast disabled, whatever dtype the embeddings arrive in.
"""
from fr_lib.losses.build import LOSSES, build_criterion
from fr_lib.losses.classification import MarginSoftmaxLoss, SoftmaxCrossEntropy
from fr_lib.losses.pairs import PairBasedLoss

__all__ = ["LOSSES", "build_criterion", "MarginSoftmaxLoss", "SoftmaxCrossEntropy", "PairBasedLoss"]
