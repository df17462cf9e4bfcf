"""fr_lib.align on real photos shipped with scikit-image (the astronaut: Eileen Collins, NASA portrait; the coffee
cup: no face) and on synthetic images whose answer follows from geometry."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data
from skimage.color import rgb2gray
from skimage.feature import Cascade

from fr_lib.align import (ARCFACE_TEMPLATE_112, FACE_TOO_SMALL, NO_FACE, SEVERAL_FACES, FaceDetection, align_face,
                          crop_face, detect_faces, estimate_alignment, select_face, template_for_size, to_rgb_array)
from fr_lib.align.transform import warp_affine

# MTCNN's landmarks on skimage.data.astronaut() (512x512), measured once with facenet-pytorch 2.5.3 and checked by
# eye on the photo: eyes at ~(205, 102) / (247, 104), nose tip ~(225, 129), mouth corners ~(202, 139) / (245, 142).
# Inter-ocular distance is ~42 px, so a 6 px tolerance is ~15% of it: an error that large would be a wrong point.
ASTRONAUT_LANDMARKS = np.array([[205, 102], [247, 104], [225, 129], [202, 139], [245, 142]], dtype=np.float32)
ROTATION_DEG = 25.0


def rotate_points(points: np.ndarray, degrees: float, center: tuple[float, float]) -> np.ndarray:
    """Where PIL's Image.rotate(degrees) (counter-clockwise on screen, about `center`) sends (x, y) points."""
    t = np.deg2rad(degrees)
    cx, cy = center
    x, y = points[:, 0] - cx, points[:, 1] - cy
    return np.stack([cx + x * np.cos(t) + y * np.sin(t), cy - x * np.sin(t) + y * np.cos(t)], axis=1)


def eye_angle_deg(landmarks: np.ndarray) -> float:
    """Angle of the left-eye -> right-eye line against the horizontal, degrees (0 = level)."""
    dx, dy = landmarks[1] - landmarks[0]
    return float(np.degrees(np.arctan2(dy, dx)))


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return (matrix @ np.c_[points, np.ones(len(points))].T).T[:, :2]


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def batch(astronaut):
    """One MTCNN batch of equal-size photos mixing faces and no face (the numpy-2 pitfall), in several formats."""
    rotated = np.asarray(Image.fromarray(astronaut).rotate(ROTATION_DEG, resample=Image.BILINEAR))
    coffee = np.asarray(Image.fromarray(data.coffee()).resize(astronaut.shape[1::-1]))
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    grey = rgb2gray(astronaut)  # (H, W) float in [0, 1]
    photos = {"rgb": astronaut, "coffee": coffee, "rotated": rotated, "rgba": rgba, "grey": grey}
    return photos, dict(zip(photos, detect_faces(list(photos.values()), batch_size=8)))


def test_astronaut_has_one_face_at_the_eyes_nose_and_mouth(batch):
    faces = batch[1]["rgb"]
    assert len(faces) == 1
    face = faces[0]
    assert face.prob > 0.99
    assert np.abs(face.landmarks - ASTRONAUT_LANDMARKS).max() < 6
    x1, y1, x2, y2 = face.box
    assert np.all((face.landmarks[:, 0] > x1) & (face.landmarks[:, 0] < x2))
    assert np.all((face.landmarks[:, 1] > y1) & (face.landmarks[:, 1] < y2))
    # an independent detector (scikit-image's LBP cascade) agrees on where the face is: IoU of the boxes
    cascade = Cascade(data.lbp_frontal_face_cascade_filename())
    (hit,) = cascade.detect_multi_scale(img=data.astronaut(), scale_factor=1.2, step_ratio=1, min_size=(60, 60),
                                        max_size=(123, 123))
    ref = np.array([hit["c"], hit["r"], hit["c"] + hit["width"], hit["r"] + hit["height"]], dtype=np.float32)
    inter = np.prod(np.clip(np.minimum(face.box[2:], ref[2:]) - np.maximum(face.box[:2], ref[:2]), 0, None))
    union = np.prod(face.box[2:] - face.box[:2]) + np.prod(ref[2:] - ref[:2]) - inter
    assert inter / union > 0.5


def test_coffee_has_no_face_and_is_a_no_face_skip(batch):
    assert batch[1]["coffee"] == []
    assert select_face([], batch[0]["coffee"].shape) == (None, NO_FACE)


def test_grey_and_rgba_photos_give_the_same_face(batch):
    ref = batch[1]["rgb"][0]
    assert len(batch[1]["rgba"]) == 1 and len(batch[1]["grey"]) == 1
    np.testing.assert_allclose(batch[1]["rgba"][0].landmarks, ref.landmarks, atol=1e-3)  # alpha 255 = same pixels
    assert np.abs(batch[1]["grey"][0].landmarks - ref.landmarks).max() < 4


def test_estimate_alignment_is_the_least_squares_similarity(batch):
    """Reference: x' = a x - b y + tx, y' = b x + a y + ty solved by linear least squares (every scaled rotation
    is such an (a, b)), i.e. the same minimiser as Umeyama's closed form."""
    landmarks = batch[1]["rgb"][0].landmarks.astype(np.float64)
    for size in (112, 160):
        dst = template_for_size(size).astype(np.float64)
        x, y = landmarks[:, 0], landmarks[:, 1]
        rows = np.concatenate([np.stack([x, -y, np.ones(5), np.zeros(5)], 1),
                               np.stack([y, x, np.zeros(5), np.ones(5)], 1)])
        (a, b, tx, ty), *_ = np.linalg.lstsq(rows, np.concatenate([dst[:, 0], dst[:, 1]]), rcond=None)
        expected = np.array([[a, -b, tx], [b, a, ty], [0, 0, 1]])
        np.testing.assert_allclose(estimate_alignment(landmarks, size), expected, atol=1e-6)
    np.testing.assert_allclose(template_for_size(160), ARCFACE_TEMPLATE_112 * 160 / 112, rtol=1e-6)


def test_warp_moves_a_point_exactly_where_the_matrix_says():
    """A Gaussian blob at p in the photo must land, sub-pixel, at M @ p in the crop (pixel-centre convention)."""
    yy, xx = np.mgrid[0:200, 0:300].astype(np.float64)
    p = np.array([131.3, 77.6])
    blob = np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * 3.0 ** 2))
    photo = np.repeat((blob * 255).round().astype(np.uint8)[..., None], 3, axis=2)
    t = np.deg2rad(17)
    matrix = np.array([[0.8 * np.cos(t), -0.8 * np.sin(t), -40.0], [0.8 * np.sin(t), 0.8 * np.cos(t), -20.0],
                       [0, 0, 1]])
    crop = warp_affine(photo, matrix, 112)[..., 0].astype(np.float64)
    cy, cx = np.mgrid[0:112, 0:112]
    centroid = np.array([(crop * cx).sum(), (crop * cy).sum()]) / crop.sum()
    np.testing.assert_allclose(centroid, apply(matrix, p[None])[0], atol=0.15)


@pytest.mark.parametrize("size", [112, 160])
def test_aligned_astronaut_has_level_eyes_at_the_template(batch, size):
    photo, landmarks = batch[0]["rgb"], batch[1]["rgb"][0].landmarks
    crop = align_face(photo, landmarks, size=size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    template = template_for_size(size)
    moved = apply(estimate_alignment(landmarks, size), landmarks)
    assert np.abs(moved[:2] - template[:2]).max() < 3 * size / 112   # eyes: within 3 px at 112
    (again,) = detect_faces([crop])[0]                                # MTCNN on the crop itself
    assert np.abs(again.landmarks[:2] - template[:2]).max() < 5 * size / 112
    assert abs(eye_angle_deg(again.landmarks)) < 3


def test_rotated_astronaut_aligns_with_level_eyes_again(batch):
    photo, (face,) = batch[0]["rotated"], batch[1]["rotated"]
    # detection follows the rotation: landmarks = rotated astronaut landmarks (PIL rotates about the centre)
    expected = rotate_points(batch[1]["rgb"][0].landmarks, ROTATION_DEG, (256, 256))
    assert np.abs(face.landmarks - expected).max() < 6
    tilt = eye_angle_deg(batch[1]["rgb"][0].landmarks) - ROTATION_DEG
    assert abs(eye_angle_deg(face.landmarks) - tilt) < 5 and tilt < -20  # tilted before alignment
    crop = align_face(photo, face.landmarks, size=112)
    (again,) = detect_faces([crop])[0]
    assert abs(eye_angle_deg(again.landmarks)) < 3                   # level after
    assert np.abs(again.landmarks[:2] - ARCFACE_TEMPLATE_112[:2]).max() < 5


def test_very_large_photo_is_downscaled_for_detection_and_mapped_back(astronaut, batch):
    canvas = np.full((4000, 6000, 3), 90, np.uint8)                  # 6000x4000 px
    scale, offset = 4.0, np.array([3100, 1200])
    big_face = np.asarray(Image.fromarray(astronaut).resize((2048, 2048), Image.BILINEAR))
    canvas[offset[1]:offset[1] + 2048, offset[0]:offset[0] + 2048] = big_face
    (face,) = detect_faces([canvas], max_side=1024)[0]
    # MTCNN sees a 1024x683 photo; pixel centres scale as (x + 0.5) * s - 0.5
    expected = (batch[1]["rgb"][0].landmarks + 0.5) * scale - 0.5 + offset
    assert np.abs(face.landmarks - expected).max() < 4 * scale
    crop = align_face(canvas, face.landmarks, size=112)
    small = align_face(astronaut, batch[1]["rgb"][0].landmarks, size=112)
    assert np.abs(crop.astype(int) - small.astype(int)).mean() < 12  # the same face, same place


def test_tiny_photos_have_no_face_and_do_not_crash():
    tiny = [np.zeros((1, 1, 3), np.uint8), np.full((8, 12), 200, np.uint8), Image.new("RGB", (19, 30))]
    assert detect_faces(tiny) == [[], [], []]


def test_crop_mode_is_the_box_plus_margin():
    photo = np.zeros((100, 200, 3), np.uint8)
    photo[20:60, 50:90] = (255, 0, 0)  # the "face" box: x 50..90, y 20..60 (40 px)
    inside = crop_face(photo, np.array([50, 20, 90, 60]), size=40, margin=0)
    assert np.all(inside == (255, 0, 0))
    # margin m px of the output: the box is grown by m * 40 / (40 - m) px of the photo, half on each side
    framed = crop_face(photo, np.array([50, 20, 90, 60]), size=40, margin=8)
    red = framed[..., 0] > 127
    assert red[20, 20] and not red[0, 0] and not red[39, 39]
    assert abs(red[20].sum() - 40 * 40 / 50) <= 1  # the box covers 40 of the 50 photo px now in the crop


def test_to_rgb_array_reads_every_mode_as_rgb_uint8():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    np.testing.assert_array_equal(to_rgb_array(Image.fromarray(grey)), np.repeat(grey[..., None], 3, axis=2))
    np.testing.assert_array_equal(to_rgb_array(grey[..., None]), np.repeat(grey[..., None], 3, axis=2))
    deep = (grey.astype(np.uint16) * 257)                           # 16-bit greyscale: v -> v / 257
    np.testing.assert_array_equal(to_rgb_array(Image.fromarray(deep))[..., 0], grey)
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0                             # fully transparent -> white
    rgba[0, 0, 3] = 255                                             # one opaque red-ish pixel
    out = to_rgb_array(Image.fromarray(rgba, "RGBA"))
    assert tuple(out[0, 0]) == (200, 0, 0) and tuple(out[1, 1]) == (255, 255, 255)
    cmyk = Image.new("CMYK", (4, 3), (0, 255, 255, 0))              # pure red in CMYK
    assert tuple(to_rgb_array(cmyk)[0, 0]) == (255, 0, 0)
    palette = Image.fromarray(np.full((3, 4, 3), 77, np.uint8)).convert("P")
    assert to_rgb_array(palette).shape == (3, 4, 3)
    np.testing.assert_array_equal(to_rgb_array(np.ones((2, 2), bool)), np.full((2, 2, 3), 255))
    np.testing.assert_array_equal(to_rgb_array(np.full((2, 2, 3), 0.5)), np.full((2, 2, 3), 128))
    with pytest.raises(ValueError, match="shape"):
        to_rgb_array(np.zeros((2, 2, 5)))


def _face(box, prob=0.99):
    box = np.asarray(box, dtype=np.float32)
    return FaceDetection(box=box, prob=prob, landmarks=np.zeros((5, 2), np.float32))


def test_select_face_policies():
    shape = (200, 300, 3)                                           # centre at (150, 100)
    big = _face([0, 0, 80, 80], prob=0.95)                          # largest, far from centre
    sure = _face([200, 150, 240, 190], prob=0.9999)                 # most probable
    mid = _face([130, 80, 170, 120], prob=0.97)                     # central
    faces = [big, sure, mid]
    assert select_face(faces, shape, "largest") == (big, None)
    assert select_face(faces, shape, "most_probable") == (sure, None)
    assert select_face(faces, shape, "central") == (mid, None)
    assert select_face(faces, shape, "skip") == (None, SEVERAL_FACES)
    assert select_face([mid], shape, "skip") == (mid, None)
    assert select_face(faces, shape, "central", min_face_size=41) == (None, FACE_TOO_SMALL)
    assert select_face(faces, shape, "largest", min_face_size=41) == (big, None)
    with pytest.raises(ValueError, match="policy"):
        select_face(faces, shape, "biggest")
