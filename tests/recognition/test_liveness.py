"""Blink liveness: the EAR formula, the blink state machine on EAR sequences, a real photo through dlib's 68-point
landmarks (open eyes; a static photo never passes), and the message when the dlib extra is missing."""
import math
import sys

import numpy as np
import pytest

from fr_lib.recognition.liveness import (EAR_THRESHOLD, BlinkDetector, EyeLandmarker, check_liveness,
                                         eye_aspect_ratio, face_ear)

OPEN, CLOSED = 0.31, 0.08


def _run(ears, **kw):
    detector = BlinkDetector(**kw)
    completed = [i for i, e in enumerate(ears) if detector.update(e)]
    return detector, completed


def test_eye_aspect_ratio_formula():
    # p1 (0,0) .. p4 (4,0) corners; upper lid p2 (1,1), p3 (3,1.5); lower lid p6 (1,-1), p5 (3,-0.5)
    eye = np.array([[0, 0], [1, 1], [3, 1.5], [4, 0], [3, -0.5], [1, -1]])
    assert eye_aspect_ratio(eye) == pytest.approx((2.0 + 2.0) / (2 * 4.0))
    shape = np.zeros((68, 2))
    shape[36:42] = eye
    shape[42:48] = eye * [1, 0.5]               # the right eye half as open
    assert face_ear(shape) == pytest.approx(0.5 * (0.5 + 0.25))


def test_blink_is_a_dip_of_a_few_frames_then_recovery():
    detector, completed = _run([OPEN] * 5 + [CLOSED] * 3 + [OPEN] * 4)
    assert completed == [8] and detector.blinks == 1 and detector.live
    detector, completed = _run([OPEN] * 5 + [CLOSED] * 3 + [OPEN] + [CLOSED] * 2 + [OPEN])
    assert completed == [8, 11] and detector.blinks == 2


def test_no_blink_too_short_dip_unrecovered_and_held_closed():
    assert not _run([OPEN] * 15)[0].live                                   # eyes open throughout
    assert not _run([OPEN] * 5 + [CLOSED] + [OPEN] * 5)[0].live            # one frame: landmark noise
    assert not _run([OPEN] * 5 + [CLOSED] * 5)[0].live                     # never reopened (yet)
    assert not _run([OPEN] * 2 + [CLOSED] * 20 + [OPEN] * 2)[0].live       # held closed, not a blink
    assert _run([OPEN] * 2 + [CLOSED] * 20 + [OPEN] * 2, max_frames=30)[0].live
    # a frame without a face breaks the dip: closed, lost, open is not a blink
    assert not _run([OPEN, CLOSED, CLOSED, None, OPEN])[0].live
    assert not _run([OPEN, CLOSED, math.nan, CLOSED, OPEN])[0].live


def test_noise_around_open_eyes_is_not_a_blink_but_a_blink_in_noise_is():
    rng = np.random.default_rng(0)
    noisy = OPEN + rng.normal(0, 0.02, 300)            # 300 frames of jittering landmarks, no blink
    assert noisy.min() > EAR_THRESHOLD and not _run(list(noisy))[0].live
    # single-frame outliers below the threshold (landmark glitches) are not blinks either
    glitches = noisy.copy()
    glitches[[50, 120, 200]] = 0.15
    assert not _run(list(glitches))[0].live
    with_blink = noisy.copy()
    with_blink[100:104] = CLOSED + rng.normal(0, 0.02, 4)
    detector, completed = _run(list(with_blink))
    assert detector.blinks == 1 and completed == [104]


def test_bad_detector_settings_raise():
    with pytest.raises(ValueError, match="min_frames"):
        BlinkDetector(min_frames=3, max_frames=2)
    with pytest.raises(ValueError, match="threshold"):
        BlinkDetector(threshold=0.0)


@pytest.fixture(scope="module")
def landmarker():
    pytest.importorskip("dlib")
    return EyeLandmarker()


def test_open_eyes_of_a_real_photo_and_a_static_photo_is_not_live(landmarker):
    from skimage.data import astronaut

    photo = astronaut()
    ear = landmarker.ear(photo)
    assert 0.25 < ear < 0.45                                     # open eyes (closed: < 0.15)
    assert landmarker.ear(photo, box=(170, 50, 280, 180)) == pytest.approx(ear, abs=0.05)  # MTCNN-like box
    assert landmarker.ear(np.zeros((120, 120, 3), np.uint8)) is None
    result = check_liveness([photo] * 15, landmarker)
    assert not result.live and result.blinks == 0 and len(result.ears) == 15
    assert result.ears == [pytest.approx(ear, abs=1e-4)] * 15   # a photo's EAR never moves
    assert result.as_dict()["live"] is False and result.as_dict()["ear_threshold"] == EAR_THRESHOLD


def test_blinking_sequence_through_the_landmarker():
    class Scripted:  # stands in for dlib: one EAR per frame
        def __init__(self, ears):
            self.ears = iter(ears)

        def ear(self, frame, box=None):
            return next(self.ears)

    frames = [np.zeros((8, 8, 3), np.uint8)] * 15
    ears = [OPEN] * 6 + [CLOSED] * 3 + [OPEN] * 6
    result = check_liveness(frames, Scripted(ears))
    assert result.live and result.blinks == 1 and result.ears == ears
    with pytest.raises(ValueError, match="at least 3 frames"):
        check_liveness(frames[:2], Scripted(ears))


def test_missing_dlib_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)      # makes `import dlib` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'fr_lib\[dlib\]'"):
        EyeLandmarker()


def test_match_with_frames_answers_not_live_for_a_photo(landmarker, monkeypatch):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from skimage.data import astronaut
    from _recognition_utils import png_base64, tiny_pipeline

    from fr_lib.recognition import liveness
    from fr_lib.recognition.gallery import Gallery
    from fr_lib.recognition.serve import create_app

    monkeypatch.setattr(liveness, "EyeLandmarker", lambda: landmarker)   # the module's predictor, loaded once
    pipeline = tiny_pipeline()
    gallery = Gallery(":memory:", pipeline=pipeline, threshold=0.5)
    client = TestClient(create_app(pipeline, gallery, token="write-token-123"))
    auth = {"Authorization": "Bearer write-token-123"}
    frame = png_base64(astronaut()[::2, ::2].copy())
    r = client.post("/match", json={"frames": [frame] * 15}, headers=auth)
    assert r.status_code == 200, r.text
    live = r.json()["liveness"]
    assert live["live"] is False and live["blinks"] == 0 and len(live["ears"]) == 15
    assert all(e is not None and e == live["ears"][0] for e in live["ears"])
    assert r.json()["num_faces"] >= 1          # the last frame was matched
    assert client.post("/match", json={"frames": [frame, "!!"]}, headers=auth).status_code == 400
    r = client.post("/match", json={"frames": [frame]}, headers=auth)
    assert r.status_code == 422 and "at least 3 frames" in r.json()["detail"]
