"""`fr recognize` on a clip assembled from a real photo (skimage's astronaut, shifted and rescaled): one box per
frame in the GIF; video files in and out; overlay drawing; clear errors for bad sources and people folders."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _recognition_utils import EXPERIMENT, tiny_pipeline, trained_experiment
from PIL import Image

from fr_lib.cli import main
from fr_lib.recognition.gallery import Gallery, Identification
from fr_lib.recognition.video import (ASTRONAUT_MOVES, KNOWN_COLOUR, UNKNOWN_COLOUR, SourceError, VideoWriter,
                              astronaut_clip, draw_overlay, open_source, recognize_stream)

MOVES = ASTRONAUT_MOVES


def _clip() -> list[np.ndarray]:
    return astronaut_clip()


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    for i, frame in enumerate(_clip()):
        Image.fromarray(frame).save(folder / f"frame{i}.png")  # natural order: frame10 would follow frame9
    return folder


@pytest.fixture(scope="module")
def people_faces(tmp_path_factory):
    from skimage import data

    root = tmp_path_factory.mktemp("people_faces")
    (root / "Eileen Collins").mkdir()
    Image.fromarray(data.astronaut()).save(root / "Eileen Collins" / "portrait.png")
    return root


@pytest.fixture
def runs(synth_root, tmp_path_factory, monkeypatch):
    import config

    trained = trained_experiment(synth_root, tmp_path_factory.mktemp("recognition") / "runs")
    monkeypatch.setattr(config, "RUNS_DIR", trained["runs_dir"])
    return trained


def _box_outline_colour(frame: np.ndarray, box) -> np.ndarray:
    """Median colour of the pixels on the top edge of ``box`` in ``frame``."""
    x1, y1, x2, _ = (int(round(v)) for v in box)
    return np.median(frame[max(y1, 0), max(x1, 0):x2].reshape(-1, 3), axis=0)


def test_fr_recognize_frames_dir_to_gif(runs, clip_dir, people_faces, tmp_path, capsys):
    out = tmp_path / "out.gif"
    code = main(["recognize", "--source", str(clip_dir), "--experiment", EXPERIMENT, "--people-faces",
                 str(people_faces), "--output", str(out), "--landmarks", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "enrolled 1 people (1 faces)" in printed and f"{len(MOVES)} frames ({len(MOVES)} identified)" in printed
    gif = Image.open(out)
    assert gif.n_frames == len(MOVES) and gif.size == (320, 240)
    # one box per frame, where the detector finds the face in that frame, in the known/unknown colour
    from fr_lib.recognition.pipeline import FacePipeline

    pipeline = FacePipeline.from_experiment(runs["checkpoint"])
    gallery = Gallery(":memory:", pipeline, threshold=runs["threshold"])
    gallery.enroll_folder(people_faces, progress=False)
    names = []
    for i, frame in enumerate(_clip()):
        (face,) = gallery.identify(frame)  # exactly one face per frame
        names.append([face.name])
        gif.seek(i)
        drawn = np.asarray(gif.convert("RGB"))
        colour = KNOWN_COLOUR if face.person_id else UNKNOWN_COLOUR
        np.testing.assert_allclose(_box_outline_colour(drawn, face.box), colour, atol=40)
        assert not np.array_equal(drawn, frame)
    # the astronaut, shifted and rescaled, is still the person enrolled from her portrait
    assert names == [["Eileen Collins"]] * len(MOVES)


def test_video_in_video_out_and_every(tmp_path):
    """A video file as the source and an MP4 as the output; --every N reuses the last answer in between."""
    pipeline = tiny_pipeline(16)
    gallery = Gallery(":memory:", pipeline, threshold=0.5)
    gallery.enroll_image("eileen", _clip()[0], name="Eileen")
    video = tmp_path / "clip.mp4"
    with VideoWriter(video, fps=5) as writer:
        for frame in _clip():
            writer.append(frame)
    source = open_source(video)
    assert source.fps == pytest.approx(5)
    stats = recognize_stream(source, gallery, output=tmp_path / "out.mp4", every=2, progress=False)
    assert stats.frames == len(MOVES) and stats.identified == len(MOVES) // 2
    assert stats.faces_per_frame == [1] * len(MOVES)
    written = list(open_source(tmp_path / "out.mp4"))
    assert len(written) == len(MOVES) and written[0].shape == (240, 320, 3)
    # odd frame sizes are padded for H.264; a GIF source works too
    with VideoWriter(tmp_path / "odd.mp4", fps=5) as writer:
        writer.append(np.zeros((31, 45, 3), np.uint8))
    assert next(iter(open_source(tmp_path / "odd.mp4"))).shape == (32, 46, 3)
    with pytest.raises(ValueError, match=r"\.gif or \.mp4"):
        VideoWriter(tmp_path / "out.avi")


def test_draw_overlay_pixels():
    frame = np.zeros((100, 120, 3), np.uint8)
    faces = [Identification(np.array([10, 40, 60, 95], np.float32), np.array([[30, 70]] * 5, np.float32), 1.0,
                            "a", "Alice", 0.9),
             Identification(np.array([70, 30, 110, 80], np.float32), None, 1.0, None, "Unknown", 0.1)]
    drawn = draw_overlay(frame, faces, fps=12.5, landmarks=True)
    assert drawn.shape == frame.shape and frame.max() == 0  # the input is not modified
    assert tuple(drawn[60, 10]) == KNOWN_COLOUR and tuple(drawn[60, 110]) == UNKNOWN_COLOUR  # left/right edges
    assert tuple(drawn[70, 30]) != (0, 0, 0) and drawn[:12, :40].max() > 0  # a landmark dot, the FPS text
    no_marks = draw_overlay(frame, faces, fps=None, landmarks=False)
    assert tuple(no_marks[70, 30]) == (0, 0, 0) and no_marks[:12, :40].max() == 0  # no dot, no FPS text


def test_bad_sources_and_people_folders(runs, clip_dir, people_faces, tmp_path, capsys):
    import os

    if not os.path.exists("/dev/video7"):
        code = main(["recognize", "--source", "7", "--experiment", EXPERIMENT, "--people-faces", str(people_faces)])
        assert code == 2 and "no camera at index 7" in capsys.readouterr().err
    with pytest.raises(SourceError, match="does not exist"):
        open_source(tmp_path / "nope.mp4")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SourceError, match="not a video"):
        open_source(tmp_path / "notes.txt")
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(SourceError, match="cannot read video"):
        open_source(tmp_path / "broken.mp4")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="holds no image"):
        open_source(empty)
    # an empty people_faces folder: a clear message, exit status 2
    code = main(["recognize", "--source", str(clip_dir), "--experiment", EXPERIMENT, "--people-faces", str(empty)])
    assert code == 2 and "is empty: expected one sub-folder per person" in capsys.readouterr().err
    # corrupt frames are skipped and reported, the rest of the clip is processed
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, frame in enumerate(_clip()[:2]):
        Image.fromarray(frame).save(frames / f"{i}.png")
    (frames / "1b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out.gif"
    code = main(["recognize", "--source", str(frames), "--experiment", EXPERIMENT, "--people-faces",
                 str(people_faces), "--output", str(out), "--no-landmarks"])
    captured = capsys.readouterr()
    assert code == 0 and "skipped 1 unreadable frame(s): 1b.png" in captured.err
    assert Image.open(out).n_frames == 2


def test_recognition_notebook_runs(runs, synth_root, tmp_path, monkeypatch):
    """notebooks/recognition.ipynb, committed without outputs, runs on the model trained above."""
    papermill = pytest.importorskip("papermill")
    import nbformat

    notebook = Path(__file__).resolve().parents[2] / "notebooks" / "recognition.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    assert "parameters" in nb.cells[1].metadata.get("tags", []), "papermill needs a cell tagged 'parameters'"
    assert not any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "commit without outputs"
    monkeypatch.setenv("FR_RUNS_DIR", str(runs["runs_dir"]))  # the kernel's config reads it at import
    out = papermill.execute_notebook(str(notebook), str(tmp_path / "out.ipynb"), cwd=str(tmp_path),
                                     kernel_name="python3", progress_bar=False, parameters={
                                         "experiment": EXPERIMENT, "people_faces": str(synth_root), "n_people": 4,
                                         "output": str(tmp_path / "recognition.gif")})
    text = "".join(o.get("text", "") for cell in out.cells for o in cell.get("outputs", []))
    assert "enrolled 4 people (20 faces)" in text
    assert f"faces per frame {[1] * len(MOVES)}" in text and "Eileen Collins" in text
    assert Image.open(tmp_path / "recognition.gif").n_frames == len(MOVES)
