"""Pretrained baselines evaluated with the preprocessing they were trained with, from the ORIGINAL photo.

Our trained models see our alignment (MTCNN landmarks -> similarity warp onto the ArcFace template, 112 px). A
pretrained baseline was trained on another crop, and handing it ours understates it: dlib's ResNet descriptor on
our tight 112 px crops (no room for its 0.25 padding, then upsampled to its 150 px chip) scores about two points
lower on LFW than through dlib's own pipeline. So each baseline declares its native preprocessing
(``NATIVE_PREPROCESSING``) and ``embed_photos`` gives it exactly that from the source photo:

- ``dlib-resnet``: dlib's own pipeline: HOG frontal detector (upsampled once) -> 5-point shape predictor ->
  ``dlib.get_face_chip(img, shape, 150, 0.25)`` -> descriptor. The chip is cut explicitly (so it can be inspected
  and cached) and gives the same descriptor as ``compute_face_descriptor(img, shape, 0, 0.25)`` (tested).
- ``facenet-*``: facenet-pytorch's own MTCNN crop: ``MTCNN(image_size=160, margin=0, post_process=True)``
  (facenet-pytorch's defaults; post_process applies its fixed_image_standardization), largest face.

Which source photo belongs to an aligned crop: ``fr align`` mirrors the source layout and keeps .jpg/.jpeg/.png
names (other formats become .png), so ``source_photo(rel, raw_root)`` finds it again. When the source photo is
missing or the baseline's own detector finds no face in it, that image falls back to our crop, and the count is
reported (``NativeEmbeddings.fallbacks``) so a table can say so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fr_lib.data.images import IMAGE_EXTENSIONS, load_rgb

NATIVE_PREPROCESSING = {
    "dlib-resnet": "dlib's own chip from the source photo (HOG detector, 5-point shape predictor, 150 px, "
                   "padding 0.25)",
    "facenet-vggface2": "facenet-pytorch's MTCNN crop from the source photo (160 px, margin 0, "
                        "fixed_image_standardization)",
    "facenet-casia-webface": "facenet-pytorch's MTCNN crop from the source photo (160 px, margin 0, "
                             "fixed_image_standardization)",
}
CROPS_NOTE = "ran on fr_lib's aligned crops (the source photos are not available)"


def native_preprocessing(name: str) -> str | None:
    """The native preprocessing a baseline declares, or None for models that use fr_lib's alignment."""
    return NATIVE_PREPROCESSING.get(name)


def source_photo(aligned_rel: str, raw_root) -> Path | None:
    """The source photo under ``raw_root`` of the aligned crop at relative path ``aligned_rel`` (see the module
    docstring for fr align's naming rule), or None when it is not there."""
    raw_root = Path(raw_root)
    same = raw_root / aligned_rel
    if same.is_file():
        return same
    rel = Path(aligned_rel)
    if rel.suffix.lower() == ".png":
        stripped = raw_root / rel.with_suffix("")       # "name.bmp.png" (a clash-avoiding name) -> "name.bmp"
        if stripped.suffix and stripped.is_file():
            return stripped
        for ext in IMAGE_EXTENSIONS:                    # "name.png" written for "name.bmp", "name.webp", ...
            for cand in (raw_root / rel.with_suffix(ext), raw_root / rel.with_suffix(ext.upper())):
                if cand.is_file():
                    return cand
    return None


@dataclass
class NativeEmbeddings:
    """embeddings: (N, D) float32 unit rows in the order of the input paths; fallbacks: relative paths that used
    our crop instead (no source photo, or no face found by the baseline's own detector), with the reason."""

    embeddings: np.ndarray
    fallbacks: list[tuple[str, str]] = field(default_factory=list)
    preprocessing: str = ""


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True).clip(min=1e-12)).astype(np.float32)


def dlib_chip_from_photo(embedder, image: np.ndarray):
    """dlib's own chip of the largest HOG face in a photo: (150, 150, 3) uint8, or None when HOG finds no face.
    ``embedder``: a fr_lib.embedders.dlib_resnet.DlibResNetEmbedder (it holds dlib's models)."""
    from fr_lib.embedders.dlib_resnet import CHIP_PADDING, CHIP_SIZE

    rects, scores, _ = embedder.detector.run(image, 1, 0.0)
    if not len(rects):
        return None
    best = max(range(len(rects)), key=lambda i: (rects[i].area(), scores[i]))
    shape = embedder.shape_predictor(image, rects[best])
    return np.asarray(embedder._dlib.get_face_chip(image, shape, CHIP_SIZE, CHIP_PADDING))


class _FacenetCropper:
    """facenet-pytorch's own crop for its pretrained InceptionResnetV1 (built once per evaluation)."""

    def __init__(self):
        from facenet_pytorch import MTCNN

        self.mtcnn = MTCNN(image_size=160, margin=0, post_process=True, select_largest=True, device="cpu")

    def __call__(self, image: np.ndarray):
        from PIL import Image

        return self.mtcnn(Image.fromarray(image))   # (3, 160, 160) standardised, or None without a face


def embed_photos(model, meta: dict, rel_paths, aligned_root, raw_root, crop_embed, device: str = "cpu",
                 progress: bool = False) -> NativeEmbeddings:
    """Embed each aligned crop's SOURCE photo with the baseline's native preprocessing.

    rel_paths: crop paths relative to ``aligned_root`` (identity/file); ``raw_root``: the folder fr align read.
    crop_embed(list_of_rel_paths) -> (n, D) embeddings through the usual crop path, used for the fallbacks.
    Returns NativeEmbeddings with (N, D) float32 unit rows in ``rel_paths`` order.
    Raises ValueError for a model without native preprocessing.
    """
    import torch

    name = meta.get("name", "")
    if name not in NATIVE_PREPROCESSING:
        raise ValueError(f"{name!r} declares no native preprocessing; choose one of {sorted(NATIVE_PREPROCESSING)}")
    rel_paths = list(rel_paths)
    out: list[np.ndarray | None] = [None] * len(rel_paths)
    fallbacks: list[tuple[str, str]] = []
    cropper = _FacenetCropper() if name.startswith("facenet-") else None
    iterator = enumerate(rel_paths)
    if progress:
        from fr_lib.progress import progress_bar
        iterator = progress_bar(iterator, total=len(rel_paths), desc=f"{name} (native)", unit="img")
    chips, chip_idx = [], []
    for i, rel in iterator:
        src = source_photo(rel, raw_root)
        if src is None:
            fallbacks.append((rel, "no source photo"))
            continue
        image = np.ascontiguousarray(np.asarray(load_rgb(src).convert("RGB")))   # load_rgb: PIL, EXIF-rotated
        if cropper is None:
            chip = dlib_chip_from_photo(model, image)
            if chip is None:
                fallbacks.append((rel, "dlib's detector found no face"))
                continue
            chips.append(chip)
            chip_idx.append(i)
        else:
            face = cropper(image)
            if face is None:
                fallbacks.append((rel, "facenet-pytorch's MTCNN found no face"))
                continue
            with torch.no_grad():
                out[i] = _unit(model(face.unsqueeze(0).to(device)).float().cpu().numpy())[0]
    if chips:   # dlib: one batched descriptor call over all chips
        raw = np.asarray(model.facerec.compute_face_descriptor(chips, model.num_jitters))
        for i, row in zip(chip_idx, _unit(raw)):
            out[i] = row
    if fallbacks:
        fb = np.asarray(crop_embed([rel for rel, _ in fallbacks]), dtype=np.float32)
        pos = {rel: k for k, (rel, _) in enumerate(fallbacks)}
        for i, rel in enumerate(rel_paths):
            if out[i] is None:
                out[i] = _unit(fb[pos[rel]])
    dim = int(meta.get("embedding_size") or (out[0].shape[-1] if rel_paths else 0))
    emb = np.stack(out).astype(np.float32) if rel_paths else np.zeros((0, dim), np.float32)
    return NativeEmbeddings(emb, fallbacks, NATIVE_PREPROCESSING[name])
