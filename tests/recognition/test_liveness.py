"""Blink liveness: the EAR formula, the blink state machine on EAR sequences, a real photo through dlib's 68-point
landmarks (open eyes; a static photo never passes), and the message when the dlib extra is missing."""
import math
import re
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


class _ScriptedEyes:
    """Stands in for EyeLandmarker: EAR by the face's box position (x1) and frame index."""

    def __init__(self, script):
        self.script = script

    def ear(self, frame, box=None):
        face = min(self.script, key=lambda x: abs(x - box[0]))   # the scripted face nearest to the box
        return self.script[face][int(frame[0, 0, 0])]


def test_tracker_marks_a_face_live_only_after_its_own_blink():
    from fr_lib.recognition.liveness import LivenessTracker

    blink = [OPEN, OPEN, CLOSED, CLOSED, OPEN, OPEN, OPEN]
    still = [OPEN] * 7
    tracker = LivenessTracker(_ScriptedEyes({10: blink, 100: still, 200: blink}), max_missed=1)
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(7)]
    a, b = (10, 10, 50, 50), (100, 10, 140, 50)
    flags = [tracker.update(f, [a, b]) for f in frames[:4]]
    assert flags == [[False, False]] * 4
    assert tracker.update(frames[4], [b, (11, 11, 51, 51)]) == [False, True]   # order-free, box moved a little
    assert tracker.tracks_started == 2
    # a new face far from every track starts its own track, which has not blinked
    assert tracker.update(frames[5], [(200, 10, 240, 50)]) == [False]
    assert tracker.tracks_started == 3
    tracker.update(frames[6], [])
    assert len(tracker.tracks) == 1          # the first two were missed for 2 frames > max_missed=1: dropped


def test_recognize_liveness_on_a_moving_photo_never_turns_live(landmarker, tmp_path, capsys, monkeypatch):
    from PIL import Image
    from _recognition_utils import tiny_pipeline
    from skimage import data

    from fr_lib.cli import main, recognize
    from fr_lib.recognition import liveness
    from fr_lib.recognition.video import astronaut_clip

    clip = tmp_path / "clip"
    clip.mkdir()
    for i, frame in enumerate(astronaut_clip(size=(480, 360))):
        Image.fromarray(frame).save(clip / f"frame{i}.png")
    people = tmp_path / "people" / "Eileen Collins"
    people.mkdir(parents=True)
    Image.fromarray(data.astronaut()).save(people / "portrait.png")
    monkeypatch.setattr(liveness, "EyeLandmarker", lambda: landmarker)
    monkeypatch.setattr(recognize, "load_pipeline", lambda args: (tiny_pipeline(), 0.5, "test"))
    code = main(["recognize", "--source", str(clip), "--people-faces", str(people.parent), "--liveness",
                 "--output", str(tmp_path / "out.gif"), "--experiment", "x"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert re.search(r"liveness: [1-6] face track\(s\); a live \(blinked\) face on 0 of 6 frames", out), out


def test_recognize_liveness_without_dlib_is_one_clear_line(tmp_path, capsys, monkeypatch):
    from fr_lib.cli import main

    monkeypatch.setitem(sys.modules, "dlib", None)
    from PIL import Image

    (tmp_path / "f").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "f" / "frame0.png")
    code = main(["recognize", "--source", str(tmp_path / "f"), "--people-faces", str(tmp_path), "--liveness",
                 "--experiment", "x"])
    err = capsys.readouterr().err
    assert code == 2 and "--liveness" in err and "pip install 'fr_lib[dlib]'" in err
