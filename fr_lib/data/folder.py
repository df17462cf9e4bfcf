"""FaceFolder: a torch Dataset over an indexed ImageFolder-style root."""
from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2.functional import pil_to_tensor

from fr_lib.data.images import ImageLoadError
from fr_lib.data.scan import FolderIndex, scan_folder


class FaceFolder(Dataset):
    """``dataset[i] -> (transform(image), label)``; image is an RGB PIL image before the transform.

    Args:
        root_or_index: a dataset root (scanned with scan_folder defaults; a RecordIO pack folder too) or a
            FolderIndex / PackIndex (whose ``load`` decodes a sample).
        transform: applied to the PIL image (e.g. build_transforms(...)).
        samples: optional subset [(path relative to root, label)], e.g. a split; default: all of the index.
        classes: identity names for the labels of ``samples`` (e.g. OpenSetSplit.train_classes); default: the
            index's classes.

    An image that fails to decode at load time (changed on disk since the scan, or a bad pack record) is recorded
    (once) in ``load_errors`` [(path, reason)] and replaced by the next image of the same identity, so an epoch
    never crashes midway.
    With DataLoader workers, each worker keeps its own ``load_errors`` (a warning is printed there).
    """

    def __init__(self, root_or_index, transform=None, samples=None, classes=None):
        index = root_or_index if isinstance(root_or_index, FolderIndex) else scan_folder(root_or_index)
        self.index = index
        self.root = Path(index.root)
        self.transform = transform
        self.samples = list(index.samples if samples is None else samples)
        self.classes = list(index.classes if classes is None else classes)
        self.targets = [label for _, label in self.samples]
        self.load_errors: list[tuple[str, str]] = []
        self._by_label = None
        # a pack can decode JPEGs straight into tensors; used only when the transform starts by turning the PIL
        # image into a tensor anyway (v2.ToImage), so the result is the same
        self._tensor_input = hasattr(index, "load_tensor") and _starts_with_to_image(transform)

    def __len__(self) -> int:
        return len(self.samples)

    def _same_identity(self, i: int) -> list[int]:
        if self._by_label is None:
            by = defaultdict(list)
            for j, label in enumerate(self.targets):
                by[label].append(j)
            self._by_label = by
        return self._by_label[self.targets[i]]

    def _record(self, rel: str, e: ImageLoadError) -> None:
        if (rel, e.reason) not in self.load_errors:  # each broken file is reported once
            self.load_errors.append((rel, e.reason))
            warnings.warn(f"skipping unreadable image {e.path}: {e.reason}", stacklevel=3)

    def load(self, i: int, tensor: bool = False):
        """The RGB PIL image of sample i (with the replacement rule), without the transform; ``tensor``: as a uint8
        (3, H, W) tensor (decoded directly when the index can, e.g. a RecordIO pack)."""
        load = self.index.load_tensor if tensor and hasattr(self.index, "load_tensor") else self.index.load
        try:
            img = load(self.samples[i][0])
            return pil_to_tensor(img) if tensor and not isinstance(img, torch.Tensor) else img
        except ImageLoadError as e:
            self._record(self.samples[i][0], e)
        group = self._same_identity(i)
        start = group.index(i)
        for j in group[start + 1:] + group[:start]:
            try:
                img = load(self.samples[j][0])
                return pil_to_tensor(img) if tensor and not isinstance(img, torch.Tensor) else img
            except ImageLoadError as e:
                self._record(self.samples[j][0], e)
        raise RuntimeError(f"no readable image left for identity label {self.targets[i]} under {self.root}")

    def __getitem__(self, i: int):
        img = self.load(i, tensor=self._tensor_input)
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[i]


def _starts_with_to_image(transform) -> bool:
    return isinstance(transform, v2.Compose) and bool(transform.transforms) and \
        isinstance(transform.transforms[0], v2.ToImage)
