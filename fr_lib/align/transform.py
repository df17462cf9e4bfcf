"""Face alignment: a similarity transform of the 5 MTCNN landmarks onto the ArcFace template, or facenet's
box crop with a margin.

The warp itself uses PIL's affine transform on the uint8 photo: skimage.transform.warp first converts the whole
photo to float64 (576 MB for a 6000x4000 photo) while PIL only computes the output pixels.
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from skimage.transform import SimilarityTransform

from fr_lib.align.image import to_rgb_array

# insightface's 5-point template for 112x112 crops (x, y in px): left eye, right eye, nose tip, left and right
# mouth corners ("left" = image left). arcface_torch/utils and insightface.utils.face_align use the same numbers.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
ALIGN_MODES = ("similarity", "crop")


def template_for_size(size: int = 112) -> np.ndarray:
    """(5, 2) float32 template for a size x size crop: ARCFACE_TEMPLATE_112 scaled by size / 112 (e.g. 160 px,
    facenet's InceptionResnetV1 input)."""
    return ARCFACE_TEMPLATE_112 * (size / 112.0)


def estimate_alignment(landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """(3, 3) float64 matrix of the least-squares similarity transform (rotation, uniform scale, translation;
    Umeyama) mapping the (5, 2) photo landmarks, px, onto :func:`template_for_size`."""
    src = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    dst = template_for_size(size).astype(np.float64)
    if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        tform = SimilarityTransform.from_estimate(src, dst)
        ok = bool(tform)
    else:
        tform = SimilarityTransform()
        ok = tform.estimate(src, dst)
    if not ok or not np.all(np.isfinite(tform.params)):
        raise ValueError(f"cannot fit a similarity transform to landmarks {src.tolist()} (degenerate points)")
    return tform.params


def warp_affine(image, matrix: np.ndarray, size: int) -> np.ndarray:
    """Warp ``image`` (anything :func:`to_rgb_array` reads) with the (3, 3) photo->crop matrix into a
    (size, size, 3) uint8 crop, bilinear, black outside the photo."""
    pil = image if isinstance(image, Image.Image) and image.mode == "RGB" else Image.fromarray(to_rgb_array(image))
    inverse = np.linalg.inv(matrix)  # PIL wants the crop -> photo mapping
    # PIL samples pixel centres at +0.5 in both spaces; the landmark coordinates here use the same convention as
    # insightface's cv2.warpAffine (integer = pixel centre), so shift in and out by half a pixel.
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    unshift = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
    coeffs = (shift @ inverse @ unshift)[:2].ravel()
    out = pil.transform((size, size), Image.AFFINE, data=tuple(coeffs), resample=Image.BILINEAR)
    return np.asarray(out)


def align_face(image, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Aligned ``(size, size, 3)`` uint8 crop: the photo warped so its 5 landmarks ((5, 2) px, MTCNN order) land on
    the ArcFace template scaled to ``size`` px (112 for ArcFace-style backbones, 160 for InceptionResnetV1)."""
    return warp_affine(image, estimate_alignment(landmarks, size), size)


def crop_face(image, box: np.ndarray, size: int = 160, margin: float | None = None) -> np.ndarray:
    """facenet-pytorch's box crop: the (4,) ``[x1, y1, x2, y2]`` box grown by ``margin`` px *of the output*
    (facenet_pytorch.extract_face semantics; default 14 px at 160, scaled with size) and resized to
    ``(size, size, 3)`` uint8. No rotation: the eyes stay wherever they were."""
    import torch  # here, not at the top: align_face stays torch-free
    from facenet_pytorch.models.utils.detect_face import extract_face

    margin = 14 * size / 160 if margin is None else margin
    pil = image if isinstance(image, Image.Image) and image.mode == "RGB" else Image.fromarray(to_rgb_array(image))
    face = extract_face(pil, np.asarray(box, dtype=np.float32).tolist(), image_size=size, margin=margin)
    return face.permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
