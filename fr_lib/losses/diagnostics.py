"""What a trained criterion does to the embeddings, one view per loss (used by the training notebooks).

    >>> criterion = load_criterion("runs/arcface-efficientnet/last.pt", cfg.loss)
    >>> angles = centre_angles(emb.embeddings, emb.labels, criterion.weight)       # ArcFace: s, m, angles
    >>> curve = ce_scale_curve(emb.embeddings, emb.labels, criterion, scales=[1, 4, 16, 64])   # CE: logit scale
    >>> share = active_triplets(emb.embeddings, emb.labels, margin=0.2, mining="batch_hard",
    ...                         batch_size=32, samples_per_class=4)               # triplet: mining

Embeddings are (N, D) unit rows of images of the TRAINING identities (labels 0..C-1, the criterion's classes),
e.g. the closed-set val images (fr_lib.evaluation.held_out.embed_samples on split.val).
"""
from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F


def load_criterion(checkpoint: str | os.PathLike, loss_cfg):
    """The trained criterion of a checkpoint (its class weights where it has them): build_criterion(loss_cfg, ...)
    with the checkpoint's 'criterion' state dict, in eval mode on the CPU."""
    from fr_lib.losses import build_criterion
    from fr_lib.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    classes = (ckpt.get("metrics") or {}).get("classes")
    if not classes:
        raise ValueError(f"{checkpoint} lists no training classes (metrics['classes']); is it a training checkpoint?")
    embedding_size = int(ckpt["config"]["model"]["embedding_size"])
    criterion = build_criterion(loss_cfg, len(classes), embedding_size)
    criterion.load_state_dict(ckpt.get("criterion") or {})
    return criterion.eval()


def centre_angles(embeddings, labels, centres) -> pd.DataFrame:
    """Angles in DEGREES between each embedding (N, D) and the class centres (C, D) (normalised here): 'target'
    (to its own class centre, ArcFace's theta_y) and 'nearest_other' (to the closest other centre). One row per
    embedding."""
    e = F.normalize(torch.as_tensor(np.asarray(embeddings), dtype=torch.float64), dim=1)
    w = F.normalize(torch.as_tensor(centres.detach() if torch.is_tensor(centres) else centres,
                                    dtype=torch.float64), dim=1)
    theta = torch.rad2deg(torch.arccos((e @ w.T).clamp(-1.0, 1.0)))         # (N, C)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    target = theta.gather(1, y[:, None])[:, 0]
    others = theta.scatter(1, y[:, None], math.inf).min(dim=1).values
    return pd.DataFrame({"target": target.numpy(), "nearest_other": others.numpy()})


def ce_scale_curve(embeddings, labels, criterion, scales) -> pd.DataFrame:
    """Softmax cross-entropy (nats, no label smoothing) and accuracy of a trained SoftmaxCrossEntropy's
    classifier on (N, D) embeddings when the unit embeddings are multiplied by each of ``scales`` instead of the
    trained criterion.scale: logits = W (s e) + b. One row per scale."""
    e = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    rows = []
    with torch.no_grad():
        for s in scales:
            logits = criterion.classifier(e * float(s))
            rows.append({"scale": float(s), "loss": float(F.cross_entropy(logits, y)),
                         "accuracy": float((logits.argmax(1) == y).double().mean())})
    return pd.DataFrame(rows)


def true_class_logits(embeddings, labels, criterion) -> pd.DataFrame:
    """criterion.logits of each embedding: 'target' (its class) and 'best_other' (the largest other class)."""
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    with torch.no_grad():
        logits = criterion.logits(torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)).double()
    target = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], -math.inf).max(dim=1).values
    return pd.DataFrame({"target": target.numpy(), "best_other": other.numpy()})


def active_triplets(embeddings, labels, margin: float, mining: str, batch_size: int, samples_per_class: int,
                    seed: int = 0) -> pd.DataFrame:
    """Per P x K batch (fr_lib.data.build_batch_sampler, as training draws them): how many triplets the
    ``mining`` selects and the share of them that is active (loss d(a,p) - d(a,n) + margin > 0; Euclidean
    distances between unit embeddings, pytorch-metric-learning's). Mining as in fr_lib.losses.pairs.triplet:
    'batch_hard' (pml BatchHardMiner), 'semi_hard' (pml TripletMarginMiner semihard), 'all'.
    Returns one row per batch: 'triplets' (valid (a, p, n) in the batch), 'mined', 'active', 'active_share'
    (active / mined), 'gap' (list of d(a,n) - d(a,p) of the mined triplets)."""
    from pytorch_metric_learning import miners
    from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

    from fr_lib.data import build_batch_sampler

    if samples_per_class < 2:
        raise ValueError("triplets need P x K batches with samples_per_class (K) >= 2")
    miner = {"batch_hard": miners.BatchHardMiner,
             "semi_hard": lambda: miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard"),
             "all": lambda: None}
    if mining not in miner:
        raise ValueError(f"unknown triplet mining {mining!r}; choose one of {sorted(miner)}")
    miner = miner[mining]()
    e = F.normalize(torch.as_tensor(np.asarray(embeddings), dtype=torch.float32), dim=1)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    rows = []
    for batch in build_batch_sampler(y.tolist(), batch_size, samples_per_class, seed):
        be, by = e[batch], y[batch]
        all_triplets = lmu.get_all_triplets_indices(by)
        a, p, n = all_triplets if miner is None else miner(be, by)
        gap = ((be[a] - be[n]).norm(dim=1) - (be[a] - be[p]).norm(dim=1)).numpy()
        active = int((margin - gap > 0).sum())
        rows.append({"triplets": int(len(all_triplets[0])), "mined": int(len(a)), "active": active,
                     "active_share": active / len(a) if len(a) else math.nan, "gap": gap.tolist()})
    if not rows:
        raise ValueError(f"no P x K batch of {batch_size} with {samples_per_class} images per identity fits "
                         f"these {len(y)} embeddings")
    return pd.DataFrame(rows)


def loss_settings(loss_cfg) -> dict:
    """The options a loss config trains with: the loss's defaults (fr_lib.losses.loss_options) overlaid with the
    config's set fields, e.g. {'margin': 0.5, 'scale': 64.0} for ArcFace (margin in radians)."""
    from fr_lib.losses.build import loss_options

    opts = loss_options(loss_cfg.name)
    return {**opts, **{k: getattr(loss_cfg, k) for k in opts if getattr(loss_cfg, k, None) is not None}}
