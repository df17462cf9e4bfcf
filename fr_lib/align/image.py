"""Turn whatever a photo arrives as (a file, a PIL image of any mode, a numpy array) into the one thing MTCNN and
the aligner accept: a contiguous ``(H, W, 3)`` uint8 RGB array.

MTCNN raises deep inside torch on greyscale and RGBA input, and on numpy input it needs cv2 (see
docs/pitfalls.md), so every entry point of :mod:`fr_lib.align` goes through :func:`to_rgb_array` first.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif")


def _composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """rgb (H, W, 3) float, alpha (H, W) float in [0, 1] -> (H, W, 3) uint8 composited over white."""
    out = rgb * alpha[..., None] + 255.0 * (1.0 - alpha[..., None])
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Any numeric array -> uint8: floats are taken as [0, 1] (skimage's convention) unless they exceed 1,
    16-bit integers are scaled by 1/257, bools map to {0, 255}."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        finite = np.nan_to_num(array.astype(np.float32))
        scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0
        return np.clip(np.rint(finite * scale), 0, 255).astype(np.uint8)
    if array.dtype in (np.uint16, np.int32, np.uint32, np.int64, np.uint64) and array.size and array.max() > 255:
        return np.clip(np.rint(array.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


def to_rgb_array(image) -> np.ndarray:
    """PIL image (any mode: L, LA, P, RGBA, CMYK, I;16, F ...) or array ``(H, W)``, ``(H, W, 1|3|4)`` of uint8,
    uint16, bool or float in [0, 1] -> contiguous ``(H, W, 3)`` uint8 RGB. Transparent pixels are composited over
    white. Raises ValueError naming the shape/mode it cannot interpret."""
    if isinstance(image, Image.Image):
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA")
        elif image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            image = np.asarray(image)  # high bit-depth greyscale: scaled below, PIL's convert would clip
        elif image.mode != "RGB":
            image = image.convert("RGB")
        if isinstance(image, Image.Image):
            image = np.asarray(image)
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(_to_uint8(array)[..., None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 1:
        array = np.repeat(_to_uint8(array), 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 2:  # grey + alpha
        grey = _to_uint8(array[..., 0]).astype(np.float32)
        alpha = _to_uint8(array[..., 1]).astype(np.float32) / 255.0
        array = _composite_on_white(np.repeat(grey[..., None], 3, axis=2), alpha)
    elif array.ndim == 3 and array.shape[2] == 4:
        rgba = _to_uint8(array).astype(np.float32)
        array = _composite_on_white(rgba[..., :3], rgba[..., 3] / 255.0)
    elif array.ndim == 3 and array.shape[2] == 3:
        array = _to_uint8(array)
    else:
        raise ValueError(f"cannot read an image of shape {array.shape} (want HxW, HxWx1, HxWx3 or HxWx4)")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"empty image of shape {array.shape}")
    return np.ascontiguousarray(array)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file -> ``(H, W, 3)`` uint8 RGB, EXIF orientation applied. Raises OSError / ValueError
    (PIL's own, naming the file) when the file is missing, truncated or not an image."""
    with Image.open(Path(path)) as image:
        image.load()  # decode now, inside the with-block, so a truncated file fails here
        image = ImageOps.exif_transpose(image)
        return to_rgb_array(image)
