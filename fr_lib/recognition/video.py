"""Recognition on a stream of frames: a camera, a video file or a folder of frames, drawn and written to GIF / MP4.

    >>> frames = open_source("clip.mp4")                 # or 0 (camera index) or "frames/" (a folder of images)
    >>> stats = recognize_stream(frames, gallery, output="out.gif", every=2, landmarks=True)
    >>> stats.faces_per_frame[:3], round(stats.fps, 1)
    ([1, 1, 1], 7.9)

Video I/O goes through imageio: its ffmpeg plugin (the binary shipped by imageio-ffmpeg) reads videos and cameras
(``<video0>``: v4l2 / dshow / avfoundation) and writes MP4 (H.264); Pillow writes GIFs. No OpenCV needed, and
nothing opens a window, so it runs headless.
"""
from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from fr_lib.io import temp_path_for

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif"}
FRAME_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
WRITE_SUFFIXES = (".gif", ".mp4")
KNOWN_COLOUR, UNKNOWN_COLOUR, LANDMARK_COLOUR = (46, 204, 64), (255, 65, 54), (255, 220, 0)


class SourceError(ValueError):
    """A frame source that cannot be opened (no camera at that index, missing file, empty folder, ...)."""


@dataclass
class FrameSource:
    """Iterable of (H, W, 3) uint8 RGB frames. ``fps``: frames per second of the source (None if unknown);
    ``skipped``: (frame name, reason) of frames that could not be read (folder sources)."""
    name: str
    frames: object  # a callable returning an iterator (so a source can be iterated once, lazily)
    fps: float | None = None
    length: int | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.frames())

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError(f"{self.name} has no known length")
        return self.length


def _natural_key(name: str):
    """'frame10.png' after 'frame9.png'."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _camera_source(index: int) -> FrameSource:
    if sys.platform.startswith("linux") and not Path(f"/dev/video{index}").exists():
        raise SourceError(f"no camera at index {index} (/dev/video{index} does not exist); pass a video file or "
                          "a folder of frames as --source instead")
    import imageio.v2 as iio

    try:
        reader = iio.get_reader(f"<video{index}>")
    except (IndexError, OSError, RuntimeError) as e:
        raise SourceError(f"cannot open camera {index}: {str(e).splitlines()[0]}") from None
    fps = reader.get_meta_data().get("fps")

    def frames():
        try:
            for frame in reader:
                yield np.ascontiguousarray(frame[..., :3])
        finally:
            reader.close()

    return FrameSource(f"camera {index}", frames, fps)


def _video_source(path: Path) -> FrameSource:
    import imageio.v2 as iio

    try:
        reader = iio.get_reader(path) if path.suffix.lower() == ".gif" else iio.get_reader(path, "ffmpeg")
        meta = reader.get_meta_data()
    except Exception as e:  # imageio raises OSError / RuntimeError / ValueError depending on plugin and codec
        raise SourceError(f"cannot read video {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
            from None
    fps = meta.get("fps") or (1000.0 / meta["duration"] if meta.get("duration") else None)

    def frames():
        from fr_lib.align.image import to_rgb_array

        try:
            for frame in reader:
                yield to_rgb_array(np.asarray(frame))
        finally:
            reader.close()

    return FrameSource(str(path), frames, fps)


def _folder_source(path: Path, fps: float | None) -> FrameSource:
    files = sorted((f for f in path.iterdir() if f.is_file() and f.suffix.lower() in FRAME_SUFFIXES),
                   key=lambda f: _natural_key(f.name))
    if not files:
        raise SourceError(f"frames folder {path} holds no image ({', '.join(sorted(FRAME_SUFFIXES))})")
    source = FrameSource(str(path), None, fps, len(files))

    def frames():
        from fr_lib.recognition.pipeline import ImageLoadError, load_image

        for f in files:
            try:
                yield load_image(f)
            except ImageLoadError as e:  # a corrupt frame is skipped and reported, never the end of the clip
                source.skipped.append((f.name, str(e)))

    source.frames = frames
    return source


def open_source(source: str | int | os.PathLike, fps: float | None = None) -> FrameSource:
    """``source``: a camera index (int or digits, e.g. "0"), a video file, or a folder of frames (read in natural
    name order; ``fps`` gives their rate, default 10). Raises SourceError with the reason when it cannot open."""
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return _camera_source(int(source))
    path = Path(source)
    if path.is_dir():
        return _folder_source(path, fps or 10.0)
    if not path.exists():
        raise SourceError(f"source {path} does not exist (want a camera index, a video file or a frames folder)")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise SourceError(f"source {path} is not a video ({', '.join(sorted(VIDEO_SUFFIXES))}) nor a folder")
    return _video_source(path)


# (scale of the 512 px photo, dx, dy in px): the face moves and changes size from frame to frame
ASTRONAUT_MOVES = ((0.50, 0, 0), (0.56, 24, 10), (0.62, -20, 16), (0.46, 30, -12), (0.52, -32, -18), (0.66, 12, 24))


def astronaut_clip(moves=ASTRONAUT_MOVES, size: tuple[int, int] = (320, 240)) -> list[np.ndarray]:
    """A short demo clip with a real face and no download: skimage's astronaut photo rescaled and shifted per
    frame on a grey (width, height) canvas -> list of (height, width, 3) uint8 frames."""
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.astronaut())
    frames = []
    for scale, dx, dy in moves:
        canvas = Image.new("RGB", size, (90, 90, 90))
        face = photo.resize((round(512 * scale),) * 2)
        canvas.paste(face, (round(size[0] * 3 / 8 - face.width / 2 + dx), round(size[1] * 5 / 8 - face.height / 2
                                                                                 + dy)))
        frames.append(np.asarray(canvas))
    return frames


# ------------------------------------------------------------------------------------------------- drawing
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def draw_overlay(frame: np.ndarray, faces: Sequence, fps: float | None = None, landmarks: bool = True) -> np.ndarray:
    """Draw boxes, names and similarities (green known, red 'Unknown'), optionally the 5 landmarks, and an FPS
    counter on a copy of the (H, W, 3) uint8 frame. ``faces``: objects with ``box`` (4,) px, ``landmarks``
    (5, 2) px or None, ``name`` and ``similarity`` (fr_lib.recognition.gallery.Identification)."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(np.ascontiguousarray(frame))
    draw = ImageDraw.Draw(image)
    h, w = frame.shape[:2]
    font = _font(max(10, min(h, w) // 30))
    line = max(1, min(h, w) // 200)
    for face in faces:
        x1, y1, x2, y2 = (float(v) for v in face.box)
        colour = UNKNOWN_COLOUR if face.person_id is None else KNOWN_COLOUR
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=line + 1)
        label = face.name if np.isnan(face.similarity) else f"{face.name} {face.similarity:.2f}"
        tx, ty = x1, max(0.0, y1 - font.size - 2 * line - 2)
        bbox = draw.textbbox((tx, ty), label, font=font)
        draw.rectangle([bbox[0] - 1, bbox[1] - 1, bbox[2] + 1, bbox[3] + 1], fill=colour)
        draw.text((tx, ty), label, fill=(0, 0, 0), font=font)
        if landmarks and face.landmarks is not None:
            r = max(1.5, line * 1.5)
            for x, y in np.asarray(face.landmarks, dtype=np.float32):
                draw.ellipse([x - r, y - r, x + r, y + r], fill=LANDMARK_COLOUR)
    if fps is not None:
        text = f"{fps:.1f} FPS"
        bbox = draw.textbbox((4, 4), text, font=font)
        draw.rectangle([bbox[0] - 2, bbox[1] - 2, bbox[2] + 2, bbox[3] + 2], fill=(0, 0, 0))
        draw.text((4, 4), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


# ------------------------------------------------------------------------------------------------- writing
class VideoWriter:
    """Write frames to ``path`` (.gif via Pillow, .mp4 via ffmpeg/H.264) at ``fps``. The file appears atomically
    on close (written to a temporary name beside it, then renamed); on an exception it is not created.
    MP4 frames of odd width/height are padded by one black pixel (yuv420p needs even sizes)."""

    def __init__(self, path: str | os.PathLike, fps: float = 10.0):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in WRITE_SUFFIXES:
            raise ValueError(f"cannot write {self.path}: the output must end in {' or '.join(WRITE_SUFFIXES)}")
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.fps = float(fps)
        self._tmp = temp_path_for(self.path)
        import imageio.v2 as iio

        if suffix == ".gif":  # Pillow's GIF writer takes the frame duration in milliseconds
            self._writer = iio.get_writer(self._tmp, mode="I", duration=1000.0 / self.fps, loop=0)
        else:
            self._writer = iio.get_writer(self._tmp, format="FFMPEG", fps=self.fps, codec="libx264",
                                          pixelformat="yuv420p", macro_block_size=1, quality=7)
        self.frames = 0

    def append(self, frame: np.ndarray) -> None:
        if self.path.suffix.lower() == ".mp4" and (frame.shape[0] % 2 or frame.shape[1] % 2):
            frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)))
        self._writer.append_data(frame)
        self.frames += 1

    def close(self, keep: bool = True) -> None:
        self._writer.close()
        if keep and self.frames:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(keep=exc_type is None or issubclass(exc_type, KeyboardInterrupt))


# ------------------------------------------------------------------------------------------------- the loop
@dataclass
class RecognizeStats:
    """frames: frames read; identified: frames on which detection + search ran (every N-th); faces_per_frame and
    names_per_frame: per frame read (frames between identifications reuse the last answer); seconds: wall time;
    fps: frames per second end to end; skipped: unreadable frames (name, reason); output: the file written."""
    frames: int = 0
    identified: int = 0
    faces_per_frame: list[int] = field(default_factory=list)
    names_per_frame: list[list[str]] = field(default_factory=list)
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    output: Path | None = None
    interrupted: bool = False
    live_per_frame: list[list[bool]] = field(default_factory=list)  # with liveness: per face, blinked yet

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def recognize_stream(source: FrameSource, gallery, *, output: str | os.PathLike | None = None, every: int = 1,
                     landmarks: bool = True, show_fps: bool = True, threshold: float | None = None,
                     max_frames: int | None = None, output_fps: float | None = None,
                     progress: bool = True, liveness=None) -> RecognizeStats:
    """Identify the faces of every ``every``-th frame of ``source`` against ``gallery`` (its pipeline detects,
    aligns and embeds; answers below ``threshold``, default the gallery's, are 'Unknown'), draw them (and the
    measured FPS, an exponential moving average of frames/s) and write the frames to ``output`` (.gif or .mp4,
    at the source's fps unless ``output_fps``). Ctrl-C stops a camera cleanly: what was recorded is kept.
    ``liveness``: a fr_lib.recognition.liveness.LivenessTracker; each face is then labelled 'live' once its track
    blinked ('no blink' before) and ``stats.live_per_frame`` records it."""
    from fr_lib.progress import progress_bar

    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    stats = RecognizeStats()
    writer = VideoWriter(output, output_fps or source.fps or 10.0) if output is not None else None
    total = source.length if max_frames is None else min(max_frames, source.length or max_frames)
    bar = progress_bar(total=total, desc="recognize", unit="frame", disable=not progress)
    faces, smoothed, start, last = [], None, time.perf_counter(), time.perf_counter()
    try:
        for i, frame in enumerate(source):
            if max_frames is not None and i >= max_frames:
                break
            if i % every == 0:
                faces = gallery.identify(frame, threshold=threshold)
                stats.identified += 1
            now = time.perf_counter()
            rate = 1.0 / max(now - last, 1e-6)
            smoothed = rate if smoothed is None else 0.9 * smoothed + 0.1 * rate
            last = now
            stats.faces_per_frame.append(len(faces))
            stats.names_per_frame.append([f.name for f in faces])
            drawn = faces
            if liveness is not None:
                live = liveness.update(frame, [f.box for f in faces])
                stats.live_per_frame.append(live)
                drawn = [replace(f, name=f"{f.name} | {'live' if ok else 'no blink'}") for f, ok in zip(faces, live)]
            if writer is not None:
                writer.append(draw_overlay(frame, drawn, smoothed if show_fps else None, landmarks))
            stats.frames += 1
            bar.update(1)
    except KeyboardInterrupt:
        stats.interrupted = True
    except BaseException:
        if writer is not None:
            writer.close(keep=False)
        raise
    finally:
        bar.close()
    if writer is not None:
        writer.close(keep=True)
        stats.output = writer.path if writer.frames else None
    stats.seconds = time.perf_counter() - start
    stats.skipped = list(source.skipped)
    if stats.frames == 0 and not stats.interrupted:
        raise SourceError(f"{source.name} yielded no readable frame"
                          + (f" ({len(source.skipped)} unreadable)" if source.skipped else ""))
    return stats
