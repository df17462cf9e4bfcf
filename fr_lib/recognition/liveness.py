"""Liveness against photo attacks: blink detection from the eye aspect ratio (Soukupova and Cech, "Real-Time Eye
Blink Detection using Facial Landmarks", CVWW 2016) over dlib's 68-point landmarks.

    >>> result = check_liveness(frames)           # list of (H, W, 3) uint8 RGB frames of one face, e.g. 15
    >>> result.live, result.blinks, result.ears   # True once a blink was seen; EAR per frame (None: no face)

EAR of one eye with landmarks p1..p6 (p1, p4 the corners; p2, p3 upper lid; p6, p5 lower lid):
EAR = (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|); about 0.25-0.35 for an open eye, near 0 when closed. The face's EAR
is the mean of both eyes. A blink is a run of at least ``min_frames`` consecutive frames with EAR below
``threshold`` that ends with a frame at or above it (the eye opened again); a run longer than ``max_frames`` is
eyes held closed, not a blink, and a single-frame dip is landmark noise. A printed or displayed photo never
changes its EAR, so it never blinks: it is "not live" however many frames it is shown for.

Needs the dlib extra (dlib + face_recognition_models, which ships shape_predictor_68_face_landmarks.dat; offline):
``pip install 'fr_lib[dlib]'``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

EAR_THRESHOLD = 0.2   # Soukupova and Cech's simple-threshold baseline; open eyes measure 0.25-0.35
MIN_FRAMES = 2        # a blink lasts 100-400 ms: 2+ frames at 15-30 fps; 1 frame below is landmark noise
MAX_FRAMES = 15       # longer below the threshold: eyes held closed (0.5-1 s), not a blink
LEFT_EYE, RIGHT_EYE = slice(36, 42), slice(42, 48)   # iBUG 68-point indices of the eye contours


def eye_aspect_ratio(eye: np.ndarray) -> float:
    """eye (6, 2) landmarks p1..p6 in pixels -> EAR (dimensionless)."""
    p = np.asarray(eye, dtype=np.float64)
    vertical = np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])
    return float(vertical / (2.0 * np.linalg.norm(p[0] - p[3])))


def face_ear(shape: np.ndarray) -> float:
    """(68, 2) landmarks -> mean EAR of both eyes."""
    shape = np.asarray(shape)
    return 0.5 * (eye_aspect_ratio(shape[LEFT_EYE]) + eye_aspect_ratio(shape[RIGHT_EYE]))


class BlinkDetector:
    """EAR per frame -> blinks, as a state machine; ``update`` returns True on the frame that completes a blink.

    A frame without a face (EAR None or NaN) ends a run below the threshold without counting it.
    """

    def __init__(self, threshold: float = EAR_THRESHOLD, min_frames: int = MIN_FRAMES, max_frames: int = MAX_FRAMES):
        if not 0 < threshold < 1 or min_frames < 1 or max_frames < min_frames:
            raise ValueError(f"blink detector needs 0 < threshold < 1 and 1 <= min_frames <= max_frames, got "
                             f"{threshold}, {min_frames}, {max_frames}")
        self.threshold, self.min_frames, self.max_frames = threshold, min_frames, max_frames
        self.blinks = 0
        self._below = 0   # length of the current run of frames below the threshold

    @property
    def live(self) -> bool:
        return self.blinks > 0

    def update(self, ear: float | None) -> bool:
        if ear is None or math.isnan(ear):
            self._below = 0
            return False
        if ear < self.threshold:
            self._below += 1
            return False
        blink = self.min_frames <= self._below <= self.max_frames
        self._below = 0
        self.blinks += blink
        return blink


class EyeLandmarker:
    """dlib's HOG face detector + 68-point shape predictor -> the EAR of a face in an RGB frame.

    ImportError naming the install command when the dlib extra is missing (checked at construction).
    """

    def __init__(self, models_dir=None):
        from fr_lib.embedders.dlib_resnet import import_dlib, model_path

        dlib = import_dlib()
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(model_path("shape_predictor_68", models_dir)))
        self._detector = dlib.get_frontal_face_detector()

    def landmarks(self, rgb: np.ndarray, box=None) -> np.ndarray | None:
        """(H, W, 3) uint8 -> (68, 2) float pixels of the largest face, or of the face in ``box`` (x1, y1, x2, y2
        px, e.g. MTCNN's: dlib's detector is run around it first, because the predictor was trained on HOG boxes
        and frames them differently); None when no face is found."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        h, w = rgb.shape[:2]
        if box is None:
            rects = list(self._detector(rgb, 1))
            if not rects:
                return None
            rect = max(rects, key=lambda r: r.area())
        else:
            x1, y1, x2, y2 = (float(v) for v in box)
            pad_x, pad_y = 0.3 * (x2 - x1), 0.3 * (y2 - y1)
            left, top = int(max(0, x1 - pad_x)), int(max(0, y1 - pad_y))
            right, bottom = int(min(w, x2 + pad_x)), int(min(h, y2 + pad_y))
            rects = list(self._detector(np.ascontiguousarray(rgb[top:bottom, left:right]), 1))
            if rects:
                r = max(rects, key=lambda r: r.area())
                rect = self._dlib.rectangle(r.left() + left, r.top() + top, r.right() + left, r.bottom() + top)
            else:
                rect = self._dlib.rectangle(int(x1), int(y1), int(x2), int(y2))
        shape = self._predictor(rgb, rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)

    def ear(self, rgb: np.ndarray, box=None) -> float | None:
        """Mean EAR of both eyes of the face (see ``landmarks``), None when no face is found."""
        shape = self.landmarks(rgb, box)
        return None if shape is None else face_ear(shape)


@dataclass
class LivenessResult:
    """``live``: at least one blink; ``ears``: EAR per frame (None where no face was found); ``blinks``: count."""
    live: bool
    blinks: int
    ears: list[float | None] = field(default_factory=list)
    threshold: float = EAR_THRESHOLD

    def as_dict(self) -> dict:
        return {"live": self.live, "blinks": self.blinks, "ears": self.ears, "ear_threshold": self.threshold}


def check_liveness(frames, landmarker: EyeLandmarker | None = None, threshold: float = EAR_THRESHOLD,
                   min_frames: int = MIN_FRAMES, max_frames: int = MAX_FRAMES) -> LivenessResult:
    """Frames of one face in time order ((H, W, 3) uint8 RGB each) -> LivenessResult (live after one blink)."""
    if len(frames) < min_frames + 1:
        raise ValueError(f"liveness needs at least {min_frames + 1} frames (a blink is {min_frames}+ frames with the "
                         f"eyes closed, then one open); got {len(frames)}")
    landmarker = landmarker or EyeLandmarker()
    detector = BlinkDetector(threshold, min_frames, max_frames)
    ears = []
    for frame in frames:
        ear = landmarker.ear(frame)
        ears.append(None if ear is None else round(ear, 4))
        detector.update(ear)
    return LivenessResult(detector.live, detector.blinks, ears, threshold)


def box_iou(a, b) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class _Track:
    box: tuple
    detector: BlinkDetector
    missed: int = 0


class LivenessTracker:
    """Faces followed across the frames of a stream, each with its own BlinkDetector: a face is live from the frame
    its first blink completes, for as long as its track lives.

    Tracking is greedy box overlap: a face continues the track whose last box overlaps it most (IoU >= ``iou``);
    a track not seen for ``max_missed`` frames is dropped (a face that leaves and comes back must blink again).
    """

    def __init__(self, landmarker: EyeLandmarker | None = None, iou: float = 0.3, max_missed: int = 5,
                 threshold: float = EAR_THRESHOLD, min_frames: int = MIN_FRAMES, max_frames: int = MAX_FRAMES):
        self.landmarker = landmarker or EyeLandmarker()
        self.iou, self.max_missed = iou, max_missed
        self._detector_args = (threshold, min_frames, max_frames)
        self.tracks: list[_Track] = []
        self.tracks_started = 0

    def update(self, frame: np.ndarray, boxes) -> list[bool]:
        """(H, W, 3) uint8 frame and the (x1, y1, x2, y2) boxes of its faces -> live flag per box."""
        free = list(self.tracks)
        assigned = []
        for box in boxes:
            box = tuple(float(v) for v in box)
            best = max(free, key=lambda t: box_iou(t.box, box), default=None)
            if best is None or box_iou(best.box, box) < self.iou:
                best = _Track(box, BlinkDetector(*self._detector_args))
                self.tracks.append(best)
                self.tracks_started += 1
            else:
                free.remove(best)
            best.box, best.missed = box, 0
            best.detector.update(self.landmarker.ear(frame, box))
            assigned.append(best)
        for track in free:
            track.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        return [t.detector.live for t in assigned]
