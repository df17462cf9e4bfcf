"""The datasets and loaders of a training run, built from a DataConfig-like object.

Splits: fr_lib.evaluation.held_out.held_out_split (deterministic by data.seed): ``eval_identity_fraction`` of the
identities are held out of training (query + distractor identities for the per-epoch TPR@FPR check, the same ones
the final comparison table uses); the training identities are split closed-set (``val_fraction`` of each
identity's images) into train and val.
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


def train_transform(data_cfg, normalization: str):
    """The per-image transform of the training images: augment + normalise, or with data_cfg.batch_augment only
    decode to uint8 (fr_lib.training.loop applies BatchAugment on the device)."""
    if getattr(data_cfg, "batch_augment", False):
        from fr_lib.data.batch_augment import uint8_transform

        return uint8_transform(data_cfg.image_size)
    from fr_lib.data import build_transforms

    return build_transforms(normalization, data_cfg.image_size, train=True, augment=data_cfg.augment)


def build_training_data(data_cfg, normalization: str) -> TrainingData:
    """Split data_cfg's dataset (fr_lib.evaluation.held_out.held_out_split: the split every evaluation of this run
    uses) and wrap the parts in datasets with ``normalization``'s transforms."""
    from fr_lib.evaluation.held_out import eval_transform, held_out_split

    split = held_out_split(data_cfg)
    index = split.index
    train_tf = train_transform(data_cfg, normalization)
    eval_tf = eval_transform(normalization, data_cfg.image_size)
    classes = split.train_classes
    open_samples = split.query + split.distractors
    return TrainingData(
        train=_dataset(data_cfg, index, split.train, classes, train_tf, "train"),
        val=_dataset(data_cfg, index, split.val, classes, eval_tf, "val") if split.val else None,
        open_set=_dataset(data_cfg, index, open_samples, None, eval_tf, "openset") if split.query else None,
        n_query=len(split.query), num_classes=len(classes), classes=classes, skipped=list(index.skipped))


def make_loader(dataset, batch_sampler, num_workers: int, pin_memory: bool) -> DataLoader:
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=False)
