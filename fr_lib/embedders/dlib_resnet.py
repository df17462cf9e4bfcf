"""dlib's ResNet face descriptor as a pretrained, offline baseline.

dlib_face_recognition_resnet_model_v1 (a 29-layer ResNet trained by Davis King on ~3M faces; dlib reports 99.38%
on LFW) maps a 150 x 150 "face chip" to a 128-d descriptor; dlib's rule of thumb is that two descriptors closer
than 0.6 (Euclidean, raw descriptors, norms ~1.3-1.5) are the same person. The weights ship with the PyPI package
``face_recognition_models`` and the runtime with ``dlib-bin``: ``pip install 'fr_lib[dlib]'``; no download at run
time.

Two entry points:

- ``DlibResNetEmbedder`` is an ``nn.Module`` with the interface of our trained models (models_definition): aligned
  face crops (B, 3, H, W) float in [0, 1] -> L2-normalised (B, 128) float32. Each crop goes through dlib's own
  alignment (5-point shape predictor on a fixed box covering the face, ``dlib.get_face_chip(img, shape, 150,
  0.25)``), so any reasonably framed crop works (our ArcFace-template crops included).
- ``DlibResNetEmbedder.describe_photo`` is dlib's full default pipeline for a raw photo: HOG frontal detector ->
  5-point shape predictor -> descriptor, one per detected face.

dlib runs on the CPU here (dlib-bin is built without CUDA): inputs on another device are copied to the CPU and
the embeddings returned on the input's device.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

INSTALL_HINT = "pip install 'fr_lib[dlib]'  (installs dlib-bin and face_recognition_models from PyPI)"
MODEL_FILES = {
    "descriptor": "dlib_face_recognition_resnet_model_v1.dat",
    "shape_predictor": "shape_predictor_5_face_landmarks.dat",
    "shape_predictor_68": "shape_predictor_68_face_landmarks.dat",   # eye contours for liveness (blinks)
    "cnn_detector": "mmod_human_face_detector.dat",
}
CHIP_SIZE = 150       # px, the descriptor network's input (dlib.get_face_chip size)
CHIP_PADDING = 0.25   # dlib's default padding around the landmarks in get_face_chip / compute_face_descriptor
# Box handed to the shape predictor inside an aligned crop, as fractions (left, top, right, bottom) of the crop's
# width/height (right/bottom exclusive). The 5-point predictor was trained on boxes from dlib's HOG detector and is
# sensitive to a box framed differently (a whole-crop box made a 10% brightness change move the descriptor by 0.46),
# so this is the median HOG box measured on 54 ArcFace-template crops (fr_lib.align, 112 and 150 px) of CelebA
# photos: (0.12-0.13, 0.27-0.29, 0.85-0.87, 0.95-1.02). With it, crop descriptors are 0.12-0.13 (median; max 0.24)
# from dlib's own detector pipeline on the full photo, far below dlib's 0.6 same-person threshold.
DEFAULT_FACE_BOX = (0.12, 0.27, 0.86, 0.97)


def dlib_available() -> bool:
    """True when both dlib and face_recognition_models are installed (nothing is imported)."""
    return all(importlib.util.find_spec(m) is not None for m in ("dlib", "face_recognition_models"))


def import_dlib():
    """``import dlib`` or an ImportError that says how to install it."""
    try:
        import dlib
    except ImportError as e:
        raise ImportError(f"the dlib baseline needs dlib: {INSTALL_HINT}") from e
    return dlib


def default_models_dir() -> Path:
    """Folder holding dlib's .dat model files inside the face_recognition_models package.

    Found without importing the package: its ``__init__`` imports pkg_resources, which recent setuptools removed.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the dlib baseline needs the face_recognition_models package: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def model_path(key: str, models_dir=None) -> Path:
    """Path of one of MODEL_FILES ('descriptor' | 'shape_predictor' | 'shape_predictor_68' | 'cnn_detector');
    FileNotFoundError if absent."""
    if key not in MODEL_FILES:
        raise ValueError(f"unknown dlib model {key!r}; choose one of {sorted(MODEL_FILES)}")
    path = Path(models_dir or default_models_dir()) / MODEL_FILES[key]
    if not path.is_file():
        raise FileNotFoundError(f"dlib model file missing: {path}; reinstall with {INSTALL_HINT}")
    return path


@dataclass
class PhotoFaces:
    """Faces found in one photo by dlib's default pipeline, largest face first (ties: higher score first).

    boxes: (F, 4) int64 detector boxes (left, top, right, bottom) in pixels of the photo.
    scores: (F,) float32 HOG detector confidence.
    descriptors: (F, 128) float32; unit L2 norm when ``normalize`` was True, else dlib's raw descriptors.
    """

    boxes: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)


def _to_rgb_uint8(image) -> np.ndarray:
    """PIL image or (H, W[, C]) uint8 array -> C-contiguous (H, W, 3) uint8 RGB (what dlib's bindings accept)."""
    if hasattr(image, "convert"):  # PIL
        image = image.convert("RGB")
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image or a PIL image, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    elif arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True).clip(min=1e-12)).astype(np.float32)


class DlibResNetEmbedder(nn.Module):
    """dlib's ResNet face descriptor behind the interface of our trained embedding models.

    forward: (B, 3, H, W) float32 aligned face crops scaled to [0, 1] (``normalization='unit'``: ToTensor only, no
    mean/std) -> (B, 128) float32 L2-normalised embeddings (cosine similarity = dot product).

    Args:
        num_jitters: dlib's test-time augmentation: 0 = one pass; n > 1 averages n randomly jittered copies of
            each chip (n times slower, slightly more accurate).
        face_box: (left, top, right, bottom) fractions of the crop given to the 5-point shape predictor as the
            face rectangle (see DEFAULT_FACE_BOX); ignored for crops where ``detect`` finds a face.
        detect: run dlib's HOG detector on each crop first (upsampled once) and use its largest box, falling back
            to ``face_box`` when it finds none; slower, and helps only for loosely framed crops.
        models_dir: folder with dlib's .dat files (default: inside face_recognition_models).

    Attributes (as on models_definition models): ``normalization='unit'``, ``default_image_size=150``,
    ``backbone_name='dlib_resnet'``, ``embedding_size=128``.
    """

    normalization = "unit"
    default_image_size = CHIP_SIZE
    backbone_name = "dlib_resnet"
    embedding_size = 128

    def __init__(self, num_jitters: int = 0, face_box=DEFAULT_FACE_BOX, detect: bool = False, models_dir=None):
        super().__init__()
        if num_jitters < 0:
            raise ValueError(f"num_jitters must be >= 0, got {num_jitters}")
        left, top, right, bottom = (float(v) for v in face_box)
        if not (left < right and top < bottom):
            raise ValueError(f"face_box must be (left, top, right, bottom) with left < right, top < bottom; "
                             f"got {face_box}")
        self.num_jitters, self.face_box, self.detect = int(num_jitters), (left, top, right, bottom), bool(detect)
        self.models_dir = None if models_dir is None else str(models_dir)
        self._load_dlib()
        # An empty, frozen parameter so callers that locate a model's device with next(model.parameters())
        # (common in embedding loops) work; dlib's weights live outside torch.
        self._device_anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    _DLIB_STATE = ("_dlib", "facerec", "shape_predictor", "detector")

    def _load_dlib(self) -> None:
        dlib = import_dlib()
        self._dlib = dlib
        self.facerec = dlib.face_recognition_model_v1(str(model_path("descriptor", self.models_dir)))
        self.shape_predictor = dlib.shape_predictor(str(model_path("shape_predictor", self.models_dir)))
        self.detector = dlib.get_frontal_face_detector()

    def __getstate__(self):  # dlib's objects do not pickle: copies (deepcopy, pickle) reload them from the files
        return {k: v for k, v in self.__dict__.items() if k not in self._DLIB_STATE}

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        self._load_dlib()

    # ------------------------------------------------------------------------------------------------ crops
    def face_rectangle(self, crop: np.ndarray):
        """The dlib.rectangle handed to the shape predictor for one (H, W, 3) uint8 crop."""
        h, w = crop.shape[:2]
        if self.detect:
            found = self.detector(crop, 1)
            if len(found):
                return max(found, key=lambda r: r.area())
        left, top, right, bottom = self.face_box
        return self._dlib.rectangle(int(round(left * w)), int(round(top * h)),
                                    int(round(right * w)) - 1, int(round(bottom * h)) - 1)

    def face_chip(self, crop) -> np.ndarray:
        """One crop (PIL or (H, W, 3) uint8) -> dlib's aligned (150, 150, 3) uint8 chip fed to the network."""
        crop = _to_rgb_uint8(crop)
        shape = self.shape_predictor(crop, self.face_rectangle(crop))
        return np.asarray(self._dlib.get_face_chip(crop, shape, CHIP_SIZE, CHIP_PADDING))

    def describe_crops(self, crops, normalize: bool = True) -> np.ndarray:
        """A list of crops (PIL or (H, W, 3) uint8) -> (B, 128) float32 descriptors (unit norm if ``normalize``)."""
        chips = [self.face_chip(c) for c in crops]
        if not chips:
            return np.zeros((0, self.embedding_size), np.float32)
        raw = np.asarray(self.facerec.compute_face_descriptor(chips, self.num_jitters), dtype=np.float64)
        return _unit(raw) if normalize else raw.astype(np.float32)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        x = images.detach().float()
        lo, hi = (float(v) for v in (x.min(), x.max())) if x.numel() else (0.0, 0.0)
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"DlibResNetEmbedder expects images scaled to [0, 1] (normalization='unit', ToTensor "
                             f"only), got values in [{lo:.3f}, {hi:.3f}]: were they standardised with "
                             f"'imagenet'/'facenet' statistics?")
        crops = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        out = self.describe_crops(list(crops))
        return torch.from_numpy(out).to(images.device)

    # ------------------------------------------------------------------------------------------------ photos
    def describe_photo(self, image, upsample: int = 1, normalize: bool = True) -> PhotoFaces:
        """dlib's default pipeline on a raw photo (PIL or (H, W[, 3]) uint8): HOG frontal detector (``upsample``
        times 2x upsampling, to find faces smaller than ~80 px) -> 5-point landmarks -> descriptor with dlib's
        own chip extraction (150 px, padding 0.25). No face -> a PhotoFaces of length 0."""
        img = _to_rgb_uint8(image)
        rects, scores, _ = self.detector.run(img, upsample, 0.0)
        order = sorted(range(len(rects)), key=lambda i: (-rects[i].area(), -scores[i]))
        boxes = np.array([[rects[i].left(), rects[i].top(), rects[i].right(), rects[i].bottom()] for i in order],
                         dtype=np.int64).reshape(-1, 4)
        desc = np.zeros((len(order), self.embedding_size), np.float32)
        if order:
            shapes = self._dlib.full_object_detections()
            for i in order:
                shapes.append(self.shape_predictor(img, rects[i]))
            raw = np.asarray(self.facerec.compute_face_descriptor(img, shapes, self.num_jitters, CHIP_PADDING))
            desc = _unit(raw) if normalize else raw.astype(np.float32)
        return PhotoFaces(boxes=boxes, scores=np.array([scores[i] for i in order], np.float32), descriptors=desc)

    def extra_repr(self) -> str:
        return f"num_jitters={self.num_jitters}, face_box={self.face_box}, detect={self.detect}"
