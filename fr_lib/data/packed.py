"""Packed cache: decode every aligned crop once into a memory-mapped uint8 array (N, S, S, 3) in a .npy file, so
epochs read raw pixels instead of decoding JPEGs (see benchmarks/loader.py for the speed-up)."""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from fr_lib.data.images import ImageLoadError
from fr_lib.data.pack import open_images
from fr_lib.data.scan import FolderIndex
from fr_lib.io import atomic_write, temp_path_for

FORMAT_VERSION = 1


def _meta_path(out_path: Path) -> Path:
    return out_path.with_suffix(".json")


def _fingerprint(samples, image_size: int) -> str:
    h = hashlib.sha1(f"v{FORMAT_VERSION}|{image_size}|".encode())
    for path, label in samples:
        h.update(f"{path}\t{label}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _decode(load, rel: str, size: int):
    try:
        img = load(rel)
    except ImageLoadError as e:
        return None, e.reason
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8), None


def pack_folder(samples, root, out_path, image_size: int, classes=None, workers: int | None = None,
                progress: bool = True) -> Path:
    """Decode ``samples`` [(path relative to root, label)] of ``root`` (a folder, a RecordIO pack folder, or a
    FolderIndex / PackIndex) into ``out_path`` (.npy, uint8 (N, S, S, 3)) plus a .json beside it (paths, labels,
    classes, failures). Images not S x S are resized (bilinear). Unreadable images are left out and listed under
    'failed' in the json. Re-packing the same samples and size is a no-op.
    Written atomically (tmp + os.replace; the json, written last, marks a complete pack). Returns out_path."""
    out_path = Path(out_path)
    load = open_images(root)   # a folder, a RecordIO pack folder, or an index (its load)
    root = Path(root.root if isinstance(root, FolderIndex) else root)
    samples = [(str(p), int(lab)) for p, lab in samples]
    fp = _fingerprint(samples, image_size)
    meta_file = _meta_path(out_path)
    if out_path.exists() and meta_file.exists():
        try:
            if json.loads(meta_file.read_text("utf-8")).get("fingerprint") == fp:
                return out_path
        except ValueError:
            pass
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(out_path)
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(samples), image_size, image_size, 3))
    kept, failed = [], []
    bar = None
    if progress:
        from fr_lib.progress import progress_bar
        bar = progress_bar(total=len(samples), desc=f"pack {out_path.name}", unit="img")
    # threads: PIL releases the GIL while decoding
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        results = pool.map(lambda s: _decode(load, s[0], image_size), samples, chunksize=64)
        for (rel, label), (pixels, reason) in zip(samples, results):
            if pixels is None:
                failed.append((rel, reason))
            else:
                arr[len(kept)] = pixels
                kept.append((rel, label))
            bar and bar.update(1)
    bar and bar.close()
    arr.flush()
    del arr
    os.replace(tmp, out_path)
    meta = {"version": FORMAT_VERSION, "fingerprint": fp, "root": str(root), "image_size": image_size,
            "n": len(kept), "paths": [p for p, _ in kept], "labels": [lab for _, lab in kept],
            "classes": list(classes) if classes is not None else None, "failed": failed}
    atomic_write(meta_file, json.dumps(meta))
    return out_path


class PackedFaces(Dataset):
    """Dataset over a pack written by pack_folder: ``dataset[i] -> (transform(x), label)`` where x is a uint8
    tensor (3, S, S). ``.samples``, ``.targets``, ``.classes``, ``.failed`` as in the pack's json.
    The memory map is opened lazily in each process (safe with DataLoader workers)."""

    def __init__(self, path, transform=None):
        self.path = Path(path)
        meta = json.loads(_meta_path(self.path).read_text("utf-8"))
        self.image_size = meta["image_size"]
        self.samples = list(zip(meta["paths"], meta["labels"]))
        self.targets = list(meta["labels"])
        self.classes = meta["classes"]
        self.failed = [tuple(f) for f in meta["failed"]]
        self.transform = transform
        self._arr = None

    @property
    def array(self) -> np.ndarray:
        """The (N, S, S, 3) uint8 memory map (only the first N = len(self) rows are valid)."""
        if self._arr is None:
            self._arr = np.load(self.path, mmap_mode="r")
        return self._arr

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_arr"] = None
        return state

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        x = torch.from_numpy(np.array(self.array[i])).permute(2, 0, 1)  # a copy: the map is read-only
        if self.transform is not None:
            x = self.transform(x)
        return x, self.targets[i]

    def get_batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """Fast path without per-item transforms: (uint8 (B, 3, S, S), int64 (B,) labels)."""
        idx = np.asarray(indices)
        order = np.argsort(idx)  # sorted reads from the memory map, then restore the requested order
        x = np.empty((len(idx), self.image_size, self.image_size, 3), np.uint8)
        x[order] = self.array[idx[order]]
        y = torch.as_tensor([self.targets[i] for i in idx.tolist()], dtype=torch.int64)
        return torch.from_numpy(x).permute(0, 3, 1, 2), y
