"""fr_lib.data: index ImageFolder-style face datasets or insightface RecordIO packs, split, transform, batch.

    >>> index = scan_folder("data/synth-demo", min_images_per_identity=5)
    >>> split = open_set_split(index, eval_identity_fraction=0.2, distractor_fraction=0.5, seed=0)
    >>> train = FaceFolder(index, build_transforms("imagenet", 112, train=True), split.train, split.train_classes)
    >>> sampler = build_batch_sampler(train.targets, batch_size=64, samples_per_class=4, seed=0)
"""
# Names load on first use (PEP 562): reading an image (fr_lib.data.images) must not import torch, which the
# datasets, samplers and transforms need -- the onnxruntime recognition path reads photos without it.
_EXPORTS = {
    "fr_lib.data.folder": ("FaceFolder",),
    "fr_lib.data.images": ("IMAGE_EXTENSIONS", "ImageLoadError", "image_file_problem", "load_rgb", "read_rgb",
                           "to_rgb_array"),
    "fr_lib.data.pack": ("PackIndex", "is_pack", "scan_pack", "unpack_pack", "write_pack"),
    "fr_lib.data.packed": ("PackedFaces", "pack_folder"),
    "fr_lib.data.sampler": ("PKSampler", "ShuffleBatchSampler", "build_batch_sampler"),
    "fr_lib.data.scan": ("FolderIndex", "default_cache_dir", "scan_folder"),
    "fr_lib.data.splits": ("OpenSetSplit", "closed_set_split", "open_set_split"),
    "fr_lib.data.transforms": ("NORMALIZATIONS", "build_transforms", "denormalize"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'fr_lib.data' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


__all__ = sorted(_MODULE_OF)
