"""Which face to keep when a photo has none or several, and why a photo is skipped."""
from __future__ import annotations

import numpy as np

from fr_lib.align.detect import FaceDetection

POLICIES = ("largest", "most_probable", "central", "skip")
# reasons a photo is skipped, as written in skipped.csv
UNREADABLE, NO_FACE, SEVERAL_FACES, FACE_TOO_SMALL = "unreadable", "no face", "several faces", "face too small"


def select_face(faces: list[FaceDetection], image_shape: tuple[int, ...], policy: str = "largest",
                min_face_size: float = 0.0) -> tuple[FaceDetection | None, str | None]:
    """Pick one face -> (face, None), or (None, reason) for a skip.

    faces: detections of one photo; image_shape: (H, W[, C]) of that photo, px.
    policy: 'largest' (box area), 'most_probable' (MTCNN probability), 'central' (box centre nearest the photo
        centre) or 'skip' (several faces -> skipped with reason 'several faces').
    min_face_size: the kept face's shorter box side must be at least this many px, else 'face too small'.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown face policy {policy!r}; choose one of {POLICIES}")
    if not faces:
        return None, NO_FACE
    if len(faces) > 1 and policy == "skip":
        return None, SEVERAL_FACES
    if policy == "most_probable" or len(faces) == 1:
        face = max(faces, key=lambda f: f.prob)
    elif policy == "largest":
        face = max(faces, key=lambda f: f.area)
    else:  # central
        centre = np.array([image_shape[1] / 2, image_shape[0] / 2], dtype=np.float32)
        face = min(faces, key=lambda f: float(np.sum((f.center - centre) ** 2)))
    if face.size < min_face_size:
        return None, FACE_TOO_SMALL
    return face, None
