"""Embeddings of a whole dataset: batched, no_grad, eval mode, AMP on CUDA only, optional flip averaging, cached.

    >>> emb = extract_embeddings(model, FaceFolder(root, transform), flip=True, cache_path="runs/x/emb.npz")
    >>> emb.embeddings.shape, emb.labels.shape, len(emb.paths)      # (N, D) float32 unit rows, (N,), N

The cache is keyed by the model's weights (a hash of its state dict), an optional caller key (e.g. the
checkpoint's path, mtime and size) and the data (hash of the ordered sample list) plus the flip flag, so rerunning
an evaluation on unchanged inputs is instant and anything changed recomputes.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fr_lib.io import atomic_path


@dataclass
class Embeddings:
    """embeddings (N, D) float32 L2-normalised; labels (N,) int64; paths: N sample paths (relative to the root)."""
    embeddings: np.ndarray
    labels: np.ndarray
    paths: list[str]

    def subset(self, mask_or_index) -> "Embeddings":
        idx = np.flatnonzero(mask_or_index) if np.asarray(mask_or_index).dtype == bool else np.asarray(mask_or_index)
        return Embeddings(self.embeddings[idx], self.labels[idx], [self.paths[i] for i in idx])


def checkpoint_fingerprint(path: str | os.PathLike) -> str:
    """'path|mtime_ns|size' of a checkpoint file: a cheap cache key that changes when the file is rewritten."""
    st = Path(path).stat()
    return f"{Path(path).resolve()}|{st.st_mtime_ns}|{st.st_size}"


def weights_hash(model) -> str:
    """sha1 over the model's state dict (names, shapes, bytes); an exported model (OnnxEmbedder) gives the sha1 of
    its file."""
    if hasattr(model, "weights_sha1"):
        return model.weights_sha1
    h = hashlib.sha1()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes())
    return h.hexdigest()


def _samples_of(data) -> list | None:
    ds = getattr(data, "dataset", data)
    return getattr(ds, "samples", None)


def _cache_key(model, data, flip: bool, cache_key) -> str:
    samples = _samples_of(data)
    if samples is None:
        raise ValueError("caching needs a dataset with a .samples list (path, label) to key the cache on the data")
    h = hashlib.sha1(json.dumps([[str(p), int(l)] for p, l in samples]).encode()).hexdigest()
    return json.dumps({"weights": weights_hash(model), "data": h, "flip": bool(flip), "extra": cache_key})


def _load_cache(path: Path, key: str) -> Embeddings | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            return Embeddings(z["embeddings"], z["labels"], [str(p) for p in z["paths"]])
    except (OSError, KeyError, ValueError):   # unreadable / old cache: recompute
        return None


def _save_cache(path: Path, key: str, emb: Embeddings) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, embeddings=emb.embeddings, labels=emb.labels, paths=np.array(emb.paths, dtype=str),
                 key=np.array(key))


def extract_embeddings(model, dataset_or_loader, device: str = "cpu", flip: bool = False, batch_size: int = 64,
                       cache_path: str | os.PathLike | None = None, progress: bool = True, num_workers: int = 0,
                       cache_key: str | None = None) -> Embeddings:
    """Embed every item of a dataset (items (image (3, H, W) float tensor, label)) or of a non-shuffling DataLoader.

    model maps (B, 3, H, W) -> (B, D). flip=True averages the embeddings of each image and its horizontal mirror,
    then re-normalises. Returns Embeddings with (N, D) float32 unit rows in dataset order. AMP (bf16 if supported,
    else fp16) is used on CUDA only (CPU bf16 speed depends on the CPU's bf16 instructions: docs/pitfalls.md).
    """
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    key = None
    if cache_path is not None:
        key = _cache_key(model, dataset_or_loader, flip, cache_key)
        cached = _load_cache(Path(cache_path), key)
        if cached is not None:
            return cached

    if isinstance(dataset_or_loader, DataLoader):
        loader = dataset_or_loader
        if isinstance(loader.sampler, RandomSampler):
            raise ValueError("extract_embeddings needs a DataLoader without shuffle (embeddings follow data order)")
    else:
        if len(dataset_or_loader) == 0:
            raise ValueError("dataset is empty: nothing to embed")
        loader = DataLoader(dataset_or_loader, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            pin_memory=str(device).startswith("cuda"))
    cuda = str(device).startswith("cuda")
    amp_dtype = (torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16) if cuda else None
    was_training = model.training
    model.eval().to(device)
    out, labels = [], []
    batches = loader
    if progress:
        from fr_lib.progress import progress_bar
        batches = progress_bar(loader, desc="embedding", unit="batch")
    try:
        amp = torch.autocast("cuda", dtype=amp_dtype) if cuda else contextlib.nullcontext()
        with torch.no_grad(), amp:
            for batch in batches:
                x, y = (batch[0], batch[1]) if isinstance(batch, (list, tuple)) else (batch, None)
                x = x.to(device, non_blocking=True)
                e = model(x).float()
                if flip:
                    e = torch.nn.functional.normalize(e, dim=1) + \
                        torch.nn.functional.normalize(model(torch.flip(x, dims=[3])).float(), dim=1)
                out.append(torch.nn.functional.normalize(e, dim=1).cpu().numpy())
                if y is not None:
                    labels.append(np.asarray(y))
    finally:
        model.train(was_training)
    emb = np.concatenate(out).astype(np.float32)
    if not np.isfinite(emb).all():
        raise ValueError(f"model produced NaN/inf embeddings for {int((~np.isfinite(emb).all(1)).sum())} images")
    samples = _samples_of(dataset_or_loader)
    lab = np.concatenate(labels).astype(np.int64) if labels else np.array([int(l) for _, l in samples or []])
    paths = [str(p) for p, _ in samples] if samples is not None else [str(i) for i in range(len(emb))]
    result = Embeddings(emb, lab, paths)
    if cache_path is not None:
        _save_cache(Path(cache_path), key, result)
    return result
