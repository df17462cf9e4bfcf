"""Face detection with facenet-pytorch's MTCNN (its bundled P/R/O-net weights, no download).

Photos are converted to RGB uint8, large ones are downscaled for detection (boxes and landmarks are mapped back to
the original pixels), and photos of equal detection size are stacked into one batch, which is what makes MTCNN
fast: ~12x the images/s of one call per photo on a 2-core CPU (benchmarks/align.py).
"""
from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from fr_lib.align.image import to_rgb_array

MTCNN_THRESHOLDS = (0.6, 0.7, 0.7)  # P-, R-, O-net probability thresholds (facenet-pytorch's defaults)


@dataclass(frozen=True)
class FaceDetection:
    """One detected face, in pixels of the original photo.

    box: (4,) float32 ``[x1, y1, x2, y2]``; prob: MTCNN face probability in [0, 1];
    landmarks: (5, 2) float32 ``(x, y)`` of left eye, right eye, nose, left mouth corner, right mouth corner
    ("left" = image left, the subject's right), the order of ARCFACE_TEMPLATE_112.
    """

    box: np.ndarray
    prob: float
    landmarks: np.ndarray

    @property
    def size(self) -> float:
        """Shorter side of the box, px."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))

    @property
    def center(self) -> np.ndarray:
        """(2,) float32 ``(x, y)`` centre of the box."""
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2], dtype=np.float32)


@functools.lru_cache(maxsize=8)
def build_detector(device: str = "cpu", min_face_size: int = 20, thresholds: tuple = MTCNN_THRESHOLDS,
                   factor: float = 0.709):
    """facenet_pytorch.MTCNN in eval mode on ``device`` (cached per argument set). ``min_face_size`` is in pixels
    of the image MTCNN sees (after the downscaling in :func:`detect_faces`); ``factor`` is the pyramid scale step.
    keep_all=True: batch mode with keep_all=False crashes under numpy 2 on mixed face/no-face batches."""
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, select_largest=False, min_face_size=min_face_size, thresholds=list(thresholds),
                 factor=factor, device=torch.device(device)).eval()


def _detection_image(rgb: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """Downscale so the longer side is at most max_side px -> (image, scale = detection px / original px)."""
    h, w = rgb.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return rgb, 1.0
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = Image.fromarray(rgb).resize(size, Image.BILINEAR, reducing_gap=2.0)
    return np.asarray(small), size[0] / w


def _unpack(boxes, probs, points, scale: float) -> list[FaceDetection]:
    """MTCNN's per-image output (dtype=object arrays, or None for no face) -> faces sorted by prob, descending."""
    if boxes is None or len(boxes) == 0:
        return []
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / scale
    probs = np.asarray(probs, dtype=np.float32).reshape(-1)
    points = np.asarray(points, dtype=np.float32).reshape(-1, 5, 2) / scale
    order = np.argsort(-probs, kind="stable")
    return [FaceDetection(boxes[i], float(probs[i]), points[i]) for i in order]


def detect_faces(images: Sequence, device: str = "cpu", batch_size: int = 32, min_face_size: int = 20,
                 max_side: int | None = 1024, thresholds: tuple = MTCNN_THRESHOLDS,
                 detector=None) -> list[list[FaceDetection]]:
    """Detect every face in each photo.

    images: a sequence of PIL images or arrays (``(H, W)``, ``(H, W, 3|4)``; any mode/dtype that
        :func:`~fr_lib.align.image.to_rgb_array` reads); a single image is treated as a one-photo sequence.
    device: torch device for MTCNN ('cpu', 'cuda'). batch_size: photos per MTCNN call; photos are grouped by
        (detection) size since MTCNN only batches equal sizes.
    min_face_size: smallest face MTCNN looks for, px of the detection image. max_side: photos whose longer side
        exceeds this are downscaled for detection (None = never); coordinates are returned in original pixels.
    detector: an MTCNN to reuse (default :func:`build_detector` of the arguments above).

    Returns one list per photo, in input order, of :class:`FaceDetection` sorted by probability (descending);
    empty when no face is found or the photo is smaller than min_face_size.
    """
    if isinstance(images, (Image.Image, np.ndarray)) and not (isinstance(images, np.ndarray) and images.ndim == 4):
        images = [images]
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if detector is None:
        detector = build_detector(str(device), int(min_face_size), tuple(thresholds))
    results: list[list[FaceDetection]] = [[] for _ in images]
    groups: dict[tuple[int, int], list[tuple[int, np.ndarray, float]]] = defaultdict(list)
    for i, image in enumerate(images):
        small, scale = _detection_image(to_rgb_array(image), max_side)
        # MTCNN's image pyramid is empty (and torch.cat fails) when the photo is smaller than the smallest face
        if min(small.shape[:2]) >= detector.min_face_size:
            groups[small.shape[:2]].append((i, small, scale))
    for members in groups.values():
        for start in range(0, len(members), batch_size):
            chunk = members[start:start + batch_size]
            batch = torch.from_numpy(np.stack([small for _, small, _ in chunk]))
            boxes, probs, points = detector.detect(batch, landmarks=True)
            for k, (i, _, scale) in enumerate(chunk):
                results[i] = _unpack(boxes[k], probs[k], points[k], scale)
    return results
