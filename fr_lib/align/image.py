"""Photos as the aligner takes them: a contiguous ``(H, W, 3)`` uint8 RGB array.

MTCNN raises deep inside torch on greyscale and RGBA input, and on numpy input it needs cv2 (see
docs/pitfalls.md), so every entry point of :mod:`fr_lib.align` goes through :func:`to_rgb_array` first. Reading and
converting is fr_lib.data.images' (one reader, one error type, one extension set for every command); this module
names it for fr_lib.align.
"""
from fr_lib.data.images import IMAGE_EXTENSIONS, ImageLoadError, image_file_problem, read_rgb, to_rgb_array

__all__ = ["IMAGE_EXTENSIONS", "ImageLoadError", "image_file_problem", "read_rgb", "to_rgb_array"]
