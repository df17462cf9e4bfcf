"""fr_lib.data: index ImageFolder-style face datasets or insightface RecordIO packs, split, transform, batch.

    >>> index = scan_folder("data/synth-demo", min_images_per_identity=5)
    >>> split = open_set_split(index, eval_identity_fraction=0.2, distractor_fraction=0.5, seed=0)
    >>> train = FaceFolder(index, build_transforms("imagenet", 112, train=True), split.train, split.train_classes)
    >>> sampler = build_batch_sampler(train.targets, batch_size=64, samples_per_class=4, seed=0)
"""
from fr_lib.data.folder import FaceFolder
from fr_lib.data.images import IMAGE_EXTENSIONS, ImageLoadError, load_rgb
from fr_lib.data.pack import PackIndex, is_pack, scan_pack, unpack_pack, write_pack
from fr_lib.data.packed import PackedFaces, pack_folder
from fr_lib.data.sampler import PKSampler, ShuffleBatchSampler, build_batch_sampler
from fr_lib.data.scan import FolderIndex, default_cache_dir, scan_folder
from fr_lib.data.splits import OpenSetSplit, closed_set_split, open_set_split
from fr_lib.data.transforms import NORMALIZATIONS, build_transforms, denormalize

__all__ = ["FaceFolder", "FolderIndex", "IMAGE_EXTENSIONS", "ImageLoadError", "NORMALIZATIONS", "OpenSetSplit",
           "PKSampler", "PackIndex", "PackedFaces", "ShuffleBatchSampler", "build_batch_sampler", "build_transforms",
           "closed_set_split", "default_cache_dir", "denormalize", "is_pack", "load_rgb", "open_set_split",
           "pack_folder", "scan_folder", "scan_pack", "unpack_pack", "write_pack"]
