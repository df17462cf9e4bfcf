"""Reading one image file into 8-bit RGB, whatever its mode (CMYK, L, LA, P, RGBA, 16-bit, float)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff",
                              ".gif"})


class ImageLoadError(OSError):
    """An image file that cannot be decoded; ``reason`` is a short human-readable cause."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


def _to_rgb(im: Image.Image) -> Image.Image:
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
        if "truncated" in msg:
            reason = "truncated image"
        else:
            reason = f"corrupt image ({type(e).__name__}: {msg})"
        raise ImageLoadError(name, reason) from None
