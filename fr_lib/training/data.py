"""The datasets and loaders of a training run, built from a DataConfig-like object.

Splits (all deterministic by data.seed): an open-set split holds ``eval_identity_fraction`` of the identities out
of training (query + distractor identities for the per-epoch TPR@FPR check); the training identities are then
split closed-set (``val_fraction`` of each identity's images) into train and val.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import DataLoader, Dataset


@dataclass
class TrainingData:
    train: Dataset
    val: Dataset | None
    open_set: Dataset | None          # query images then distractor images
    n_query: int                      # the first n_query items of open_set are the query set
    num_classes: int
    classes: list[str]
    skipped: list                     # (path, reason) dropped by the scan


def _dataset(data_cfg, index, samples, classes, transform, tag: str):
    """FaceFolder over ``samples``, or a PackedFaces cache of them when data_cfg.packed_cache."""
    from fr_lib.data import FaceFolder, PackedFaces, default_cache_dir, pack_folder

    if not data_cfg.packed_cache:
        return FaceFolder(index, transform, samples=samples, classes=classes)
    cache = Path(data_cfg.cache_dir) if data_cfg.cache_dir else default_cache_dir() / "packed"
    out = cache / f"{Path(index.root).name}-{tag}-{data_cfg.image_size}px.npy"
    pack_folder(samples, index.root, out, data_cfg.image_size, classes=classes)
    packed = PackedFaces(out, transform)
    if packed.failed:
        print(f"packed cache {out.name}: {len(packed.failed)} unreadable image(s) left out, "
              f"e.g. {packed.failed[0]}")
    return packed


def build_training_data(data_cfg, normalization: str) -> TrainingData:
    """Scan data_cfg.root, split, and wrap the splits in datasets with ``normalization``'s transforms."""
    from fr_lib.data import build_transforms, closed_set_split, open_set_split, scan_folder

    index = scan_folder(data_cfg.root, min_images_per_identity=data_cfg.min_images_per_identity,
                        max_images_per_identity=data_cfg.max_images_per_identity,
                        max_identities=data_cfg.max_identities)
    split = open_set_split(index, data_cfg.eval_identity_fraction, data_cfg.distractor_fraction, data_cfg.seed)
    train, val = closed_set_split(split.train, data_cfg.val_fraction, data_cfg.seed)
    if getattr(data_cfg, "batch_augment", False):   # uint8 pixels only; fr_lib.training.loop applies BatchAugment
        from fr_lib.data.batch_augment import uint8_transform

        train_tf = uint8_transform(data_cfg.image_size)
    else:
        train_tf = build_transforms(normalization, data_cfg.image_size, train=True, augment=data_cfg.augment)
    eval_tf = build_transforms(normalization, data_cfg.image_size, train=False)
    classes = split.train_classes
    open_samples = split.query + split.distractors
    return TrainingData(
        train=_dataset(data_cfg, index, train, classes, train_tf, "train"),
        val=_dataset(data_cfg, index, val, classes, eval_tf, "val") if val else None,
        open_set=_dataset(data_cfg, index, open_samples, None, eval_tf, "openset") if split.query else None,
        n_query=len(split.query), num_classes=len(classes), classes=classes, skipped=list(index.skipped))


def make_loader(dataset, batch_sampler, num_workers: int, pin_memory: bool) -> DataLoader:
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=False)
