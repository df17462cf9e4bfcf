"""Checkpoints: atomic save, safe load (``weights_only=True``), RNG capture, and rebuilding a trained embedder.

A training checkpoint is a dict with keys 'model' (state dict of backbone + neck), 'criterion', 'optimizer',
'scheduler', 'scaler', 'epoch' (epochs completed), 'config' (ExperimentConfig.to_dict()), 'metrics' (last epoch's
metrics and the history), 'rng' (capture_rng_state()), plus 'sampler' and 'early_stopping' state.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch
from fr_lib.io import atomic_path


_MISSING = object()


def config_differences(old: dict, new: dict, ignore=frozenset()) -> list[str]:
    """'key: old -> new' for every leaf that differs between two nested config dicts (ExperimentConfig.to_dict(),
    e.g. a checkpoint's 'config' against the config about to run); dotted keys in ``ignore`` are not compared, a key
    present on one side only is a difference. Values are compared as JSON would store them (tuples = lists)."""
    import json

    def walk(a: dict, b: dict, prefix: str) -> list[str]:
        out = []
        for key in sorted(set(a) | set(b)):
            x, y, dotted = a.get(key, _MISSING), b.get(key, _MISSING), f"{prefix}{key}"
            if isinstance(x, dict) and isinstance(y, dict):
                out += walk(x, y, dotted + ".")
            elif x != y and dotted not in ignore:
                out.append(f"{dotted}: {'(absent)' if x is _MISSING else repr(x)} -> "
                           f"{'(absent)' if y is _MISSING else repr(y)}")
        return out

    return walk(json.loads(json.dumps(old)), json.loads(json.dumps(new)), "")


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` with torch.save to a temporary file beside ``path``, fsync it, then os.replace: a reader
    (or a resumed run after a crash) sees the old file or the new one, never half of one."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """torch.load with weights_only=True (tensors and plain Python containers only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


def load_embedder(checkpoint_path: str | os.PathLike, device="cpu"):
    """Rebuild backbone + neck from the checkpoint's config snapshot and load its weights.

    Returns (model in eval mode on ``device``, meta) with meta keys 'config' (dict), 'image_size' (px),
    'normalization' ('imagenet' | 'facenet'), 'backbone', 'embedding_size', 'epoch', 'metrics'.
    """
    from models_definition import build_backbone

    ckpt = load_checkpoint(checkpoint_path)
    if "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{checkpoint_path} is not an fr_lib training checkpoint (keys: {sorted(ckpt)[:8]})")
    mcfg = ckpt["config"]["model"]
    # pretrained=None: the checkpoint holds every weight, nothing must be downloaded
    model = build_backbone(mcfg["backbone"], embedding_size=mcfg["embedding_size"], dropout=mcfg.get("dropout", 0.0),
                           image_size=ckpt["config"]["data"]["image_size"])
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    meta = {"config": ckpt["config"], "image_size": ckpt["config"]["data"]["image_size"],
            "normalization": model.normalization, "backbone": model.backbone_name,
            "embedding_size": model.embedding_size, "epoch": ckpt.get("epoch"), "metrics": ckpt.get("metrics", {})}
    return model, meta


def capture_rng_state() -> dict:
    """torch (CPU and every CUDA device), numpy's legacy global and Python's ``random`` states, as tensors and
    plain containers so that a weights_only load accepts them."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
            "python": list(random.getstate())}


def restore_rng_state(state: dict) -> None:
    """Inverse of capture_rng_state; accepts a state loaded with any map_location (RNG states must be CPU bytes)."""
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))

