"""The one image reader of fr_lib: a file (or encoded bytes, or a PIL image / array already in memory) -> 8-bit RGB,
whatever its mode (CMYK, L, LA, P, RGBA, 16-bit, float), EXIF orientation applied.

    load_rgb(path) -> PIL RGB image          (datasets, scan, packs)
    read_rgb(path) -> (H, W, 3) uint8 array  (fr align, the recognition pipeline)
    to_rgb_array(image) -> (H, W, 3) uint8   (PIL image of any mode or array from memory)

Every failure is an ImageLoadError naming the file and the reason; IMAGE_EXTENSIONS / image_file_problem decide
what counts as an image file for `fr data stats`, `fr align` and the rest alike. Imports numpy and PIL only (no
torch: the onnxruntime recognition path reads photos through here).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff",
                              ".gif"})


class ImageLoadError(OSError, ValueError):
    """An image that cannot be read or decoded; ``path`` names it, ``reason`` is a short human-readable cause.
    Both an OSError (a file problem) and a ValueError (bad input: the CLIs exit 2 on it)."""

    def __init__(self, path, reason: str):
        super().__init__(f"cannot read {path}: {reason}")
        self.path, self.reason = str(path), reason

    def __reduce__(self):  # picklable (DataLoader workers, multiprocessing), though __init__ takes two arguments
        return type(self), (self.path, self.reason)


def image_file_problem(name: str) -> str | None:
    """None when a file called ``name`` is read as an image (its extension is in IMAGE_EXTENSIONS and it is not
    hidden), else why not. Decoding may still fail: see load_rgb."""
    if name.startswith("."):
        return "hidden file (not an image)"
    ext = Path(name).suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        return f"not an image file ({ext or 'no extension'})"
    return None


def _to_rgb(im: Image.Image) -> Image.Image:
    """A PIL image of any mode -> mode RGB, transparent pixels over white, 16/32-bit grey rescaled to 8 bits."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit / 32-bit grey: PIL's convert("RGB") clips to 255 (a white image); rescale to 8 bits instead.
        x = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16"):
            x = x / 257.0
        elif x.size and x.max() > 255:
            x = x * (255.0 / (65535.0 if x.max() <= 65535 else x.max()))
        return Image.fromarray(np.clip(x + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # transparent pixels become white (a defined colour, not whatever the file stored under alpha = 0)
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, im).convert("RGB")
    return im.convert("RGB")


def load_rgb(path, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode ``path`` fully into an 8-bit RGB PIL image (EXIF orientation applied).

    ``draft_size``: let the JPEG decoder downscale by a power of two towards this size (fast validity checks).
    Raises ImageLoadError(path, reason) for empty, truncated, corrupt or unidentifiable files.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageLoadError(path, "empty file (0 bytes)")
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(path, "file not found") from None
    except OSError as e:
        raise ImageLoadError(path, f"unreadable ({e.strerror or e})") from None
    return _decode(path, path, draft_size)


def decode_rgb(data: bytes, name: str, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """load_rgb for encoded image bytes held in memory (a record of a RecordIO pack); ``name`` is reported in
    ImageLoadError."""
    if not data:
        raise ImageLoadError(name, "empty image (0 bytes)")
    return _decode(io.BytesIO(data), name, draft_size)


def _decode(source, name, draft_size) -> Image.Image:
    try:
        with Image.open(source) as im:
            if draft_size is not None and im.format == "JPEG":
                im.draft("RGB", draft_size)
            im.load()
            im = ImageOps.exif_transpose(im) if im.getexif().get(0x0112, 1) != 1 else im
            return _to_rgb(im)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(name, "not a recognised image format") from None
    except FileNotFoundError:
        raise ImageLoadError(name, "file not found") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        msg = str(e).split("\n")[0]
        if "truncated" in msg.lower():   # PIL says "image file is truncated" or "Truncated File Read"
            reason = "truncated image"
        else:
            reason = f"corrupt image ({type(e).__name__}: {msg})"
        raise ImageLoadError(name, reason) from None


def read_rgb(path) -> np.ndarray:
    """load_rgb as a contiguous (H, W, 3) uint8 array (the input MTCNN and the aligner take)."""
    return to_rgb_array(load_rgb(path))


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
    """PIL image (any mode: converted as load_rgb converts files) or array ``(H, W)``, ``(H, W, 1|2|3|4)`` of uint8,
    uint16, bool or float in [0, 1] -> contiguous ``(H, W, 3)`` uint8 RGB. Transparent pixels are composited over
    white. Raises ValueError naming the shape it cannot interpret."""
    if isinstance(image, Image.Image):
        array = np.asarray(_to_rgb(image))
    else:
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
