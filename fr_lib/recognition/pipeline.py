"""Photo -> faces -> embeddings: MTCNN detection, landmark alignment, and a trained embedding model.

    >>> pipeline = FacePipeline.from_experiment("runs/arcface-efficientnet/best.pt", device="cpu")
    >>> faces = pipeline.embed_faces("photo.jpg", policy="all")
    >>> faces[0].box, faces[0].landmarks.shape, faces[0].embedding.shape
    (array([ 91.2,  40.7, 283.9, 270.1], dtype=float32), (5, 2), (512,))

``policy`` says which faces of a photo to keep: 'all' (every face, by detector probability), 'largest' (the one
with the largest box), 'single' (exactly one face, else :class:`FaceCountError`), or 'aligned': the photo is taken
as an already aligned face crop (no detection; box = the whole photo), as the synthetic dataset and aligned
CASIA-WebFace crops are.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fr_lib.data.images import ImageLoadError, read_rgb, to_rgb_array   # ImageLoadError: re-exported

POLICIES = ("all", "largest", "single", "aligned")
NORMALIZATIONS = ("imagenet", "facenet")  # as fr_lib.data.build_transforms


class FaceCountError(ValueError):
    """policy='single' and a photo holds no face or several faces."""


@dataclass(frozen=True)
class FaceEmbedding:
    """One face: ``box`` (4,) float32 x1, y1, x2, y2 in pixels of the photo; ``landmarks`` (5, 2) float32 pixels
    (eyes, nose, mouth corners) or None for an aligned crop; ``prob`` detector probability (1.0 for a crop);
    ``embedding`` (embedding_size,) float32, L2-normalised."""
    box: np.ndarray
    landmarks: np.ndarray | None
    prob: float
    embedding: np.ndarray

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


def load_image(image) -> np.ndarray:
    """A path (fr_lib.data.images.read_rgb), PIL image or array -> (H, W, 3) uint8 RGB; any failure raises
    ImageLoadError naming the input."""
    if isinstance(image, (str, Path)):
        return read_rgb(image)
    try:
        return to_rgb_array(image)
    except (ValueError, TypeError) as e:  # a shape or dtype that is no image
        raise ImageLoadError("image", str(e)) from e


def weights_fingerprint(model) -> str:
    """12 hex digits identifying a model's weights (sha1 over its state_dict): a gallery built with one set of
    weights must not be searched with embeddings of another."""
    digest = hashlib.sha1()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


class FacePipeline:
    """Detect, align and embed faces with one embedding model.

    Args:
        model: nn.Module mapping (B, 3, image_size, image_size) normalised float images to (B, D) embeddings, or
            a model that embeds uint8 crops itself (``embed_images(crops) -> (N, D)``: the torch-free
            fr_lib.embedders.onnx.OnnxEmbedder, see ``from_onnx``).
        image_size: side of the square aligned crop the model takes, px.
        normalization: 'imagenet' (timm backbones) or 'facenet' (InceptionResnetV1), as at training time.
        model_name: names the embedding space (a gallery refuses embeddings from another model_name).
        align_mode: 'similarity' (5-point warp onto the ArcFace template, fr_lib.align.align_face) or 'crop'
            (facenet's box + margin, fr_lib.align.crop_face): the mode the training crops were made with.
        device: torch device for the model and MTCNN.
        min_face_size: smallest face MTCNN looks for, px. max_side: photos are downscaled to this longer side for
            detection (coordinates come back in original pixels).
    A lock serialises calls, so one pipeline can serve the threads of a web server.
    """

    def __init__(self, model, image_size: int, normalization: str, *, model_name: str,
                 align_mode: str = "similarity", device: str = "cpu", min_face_size: int = 20,
                 max_side: int | None = 1024):
        if align_mode not in ("similarity", "crop"):
            raise ValueError(f"unknown align_mode {align_mode!r}; choose 'similarity' or 'crop'")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {normalization!r}; choose one of {NORMALIZATIONS}")
        self.device = str(device)
        self.model = model.to(self.device).eval()
        self.image_size = int(image_size)
        self.normalization = normalization
        self.model_name = str(model_name)
        self.align_mode = align_mode
        self.min_face_size = int(min_face_size)
        self.max_side = max_side
        self._lock = threading.RLock()
        self._embedding_size = getattr(model, "embedding_size", None)
        self._transform = None

    # --------------------------------------------------------------------------------------- construction
    @classmethod
    def from_experiment(cls, checkpoint_path: str | Path, device: str = "cpu", **kwargs) -> "FacePipeline":
        """Load a training checkpoint (fr_lib.training.checkpoint.load_embedder): its backbone, image_size and
        normalization; model_name = '<experiment>:<backbone>:<weights fingerprint>'."""
        from fr_lib.training.checkpoint import load_embedder

        checkpoint_path = Path(checkpoint_path)
        if not checkpoint_path.is_file():
            raise FileNotFoundError(f"no checkpoint at {checkpoint_path}: train the experiment first (fr train)")
        model, meta = load_embedder(checkpoint_path, device=device)
        config = meta.get("config") or {}
        experiment = config.get("name", checkpoint_path.parent.name)
        backbone = (config.get("model") or {}).get("backbone", getattr(model, "backbone_name", "model"))
        name = f"{experiment}:{backbone}:{weights_fingerprint(model)}"
        return cls(model, meta["image_size"], meta["normalization"], model_name=name, device=device, **kwargs)

    @classmethod
    def from_onnx(cls, path: str | Path, device: str = "cpu", **kwargs) -> "FacePipeline":
        """An exported model (``fr export``) on onnxruntime: image_size, normalization and model_name come from
        its contract (model_name is the PyTorch run's, so the same galleries accept it). Embedding imports no
        torch; only MTCNN detection does."""
        from fr_lib.embedders.onnx import OnnxEmbedder

        model = OnnxEmbedder(path, device=device)
        return cls(model, model.default_image_size, model.normalization, model_name=model.model_name,
                   device=device, **kwargs)

    @property
    def embedding_size(self) -> int:
        if self._embedding_size is None:  # a plain nn.Module: ask it once
            self._embedding_size = int(self.embed_crops([np.zeros((self.image_size,) * 2 + (3,), np.uint8)]).shape[1])
        return int(self._embedding_size)

    # --------------------------------------------------------------------------------------- embedding
    def preprocess(self, crops) -> "torch.Tensor":  # noqa: F821
        """List of (h, w, 3) uint8 RGB crops -> (B, 3, image_size, image_size) float32 on device, through the
        very eval transform training used (fr_lib.data.build_transforms: resize, scale to [0, 1], normalise)."""
        import torch

        if self._transform is None:
            from fr_lib.data import build_transforms

            self._transform = build_transforms(self.normalization, self.image_size, train=False)
        return torch.stack([self._transform(np.array(c, dtype=np.uint8)) for c in crops]).to(self.device)

    def embed_crops(self, crops, batch_size: int = 64) -> np.ndarray:
        """Aligned face crops (list of (h, w, 3) uint8 arrays / PIL images) -> (N, D) float32 L2-normalised."""
        crops = [load_image(c) for c in crops]
        if hasattr(self.model, "embed_images"):  # embeds uint8 crops itself (OnnxEmbedder): no torch here
            with self._lock:
                return self.model.embed_images(crops, batch_size=batch_size)
        import torch

        out = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(crops), batch_size):
                emb = self.model(self.preprocess(crops[start:start + batch_size])).float()
                out.append(torch.nn.functional.normalize(emb, dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self._embedding_size or 0), np.float32)

    def detect(self, rgb: np.ndarray):
        """(H, W, 3) uint8 -> list of fr_lib.align FaceDetection (box, prob, landmarks), by probability."""
        from fr_lib.align import detect_faces

        with self._lock:
            return detect_faces([rgb], device=self.device, min_face_size=self.min_face_size,
                                max_side=self.max_side)[0]

    def align(self, rgb: np.ndarray, detection) -> np.ndarray:
        """Crop one detected face (fr_lib.align FaceDetection) to (image_size, image_size, 3) uint8: 'similarity'
        warps its 5 landmarks onto the ArcFace template, 'crop' takes facenet's box + margin (no rotation)."""
        from fr_lib.align import align_face, crop_face

        if self.align_mode == "crop":
            return crop_face(rgb, detection.box, size=self.image_size)
        return align_face(rgb, detection.landmarks, size=self.image_size)

    def embed_faces(self, image, policy: str = "all") -> list[FaceEmbedding]:
        """Faces of one photo (path, PIL image or array) with their embeddings; [] when no face is found.

        policy: 'all' | 'largest' | 'single' | 'aligned' (see the module docstring). Unreadable input raises
        ImageLoadError; policy='single' with zero or several faces raises FaceCountError.
        """
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; choose one of {POLICIES}")
        rgb = load_image(image)
        if policy == "aligned":
            h, w = rgb.shape[:2]
            box = np.array([0, 0, w, h], dtype=np.float32)
            return [FaceEmbedding(box, None, 1.0, self.embed_crops([rgb])[0])]
        detections = self.detect(rgb)
        if policy == "single" and len(detections) != 1:
            raise FaceCountError(f"expected exactly one face, found {len(detections)}"
                                 + (" (use the largest-face option to pick one)" if detections else ""))
        if policy == "largest" and detections:
            detections = [max(detections, key=lambda d: d.area)]
        if not detections:
            return []
        crops = [self.align(rgb, d) for d in detections]
        embeddings = self.embed_crops(crops)
        return [FaceEmbedding(np.asarray(d.box, np.float32), np.asarray(d.landmarks, np.float32), float(d.prob), e)
                for d, e in zip(detections, embeddings)]
