"""Align a whole identity/file folder: SRC/<identity>/<photo> -> DST/<identity>/<photo>, resumable.

Resumability: every crop is written to a temporary file beside its destination and os.replace'd into place, so a
file under DST is either complete or absent; skipped photos are appended (one flushed line each) to
DST/.fr_align_skipped.csv. A rerun skips both, so an interrupted run loses nothing and redoes nothing.
DST/skipped.csv (path, reason, detail) is rewritten atomically at the end of every run.

Pipeline: a thread pool decodes the next chunk of photos and encodes/writes the crops of the previous one while
the main thread runs batched MTCNN detection (the GIL is released in PIL decode/encode and in torch).
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from fr_lib.align.detect import build_detector, detect_faces
from fr_lib.align.image import IMAGE_EXTENSIONS, image_file_problem, read_rgb
from fr_lib.align.policy import FACE_TOO_SMALL, NO_FACE, POLICIES, SEVERAL_FACES, UNREADABLE, select_face
from fr_lib.align.transform import ALIGN_MODES, align_face, crop_face
from fr_lib.data.scan import ALIGN_LOCK as LOCK_FILE          # held (flock) while a run writes DST
from fr_lib.data.scan import ALIGN_SETTINGS as SETTINGS       # settings of the run that made DST; a rerun must match
from fr_lib.data.scan import ALIGN_SKIP_LOG as SKIP_LOG       # append-only manifest of skipped photos (resume state)
from fr_lib.data.scan import ALIGN_SKIPPED_CSV as SKIPPED_CSV
from fr_lib.data.scan import is_own_file
from fr_lib.io import atomic_write, is_temp_file
CHUNK_BYTES = 256 * 2**20  # decoded photos per chunk; about three chunks are in memory at once
OUTPUT_SUFFIXES = (".jpg", ".jpeg", ".png")  # kept as they are; other formats are written as .png (lossless)


@dataclass
class AlignSummary:
    """What align_folder did. Counts are over the whole SRC (this run and earlier ones) unless named *_this_run."""

    src: Path
    dst: Path
    total: int                                   # image files found under SRC
    aligned: int                                 # crops present in DST
    skipped: dict[str, int]                      # reason -> number of photos skipped
    done_before: int                             # aligned or skipped by an earlier run, not redone
    processed_this_run: int
    seconds: float
    skipped_csv: Path
    skipped_paths: list[tuple[str, str]] = field(default_factory=list, repr=False)  # (path, reason)

    @property
    def images_per_s(self) -> float:
        return self.processed_this_run / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped.items())) or "none"
        return (f"{self.total} photos under {self.src}: {self.aligned} aligned into {self.dst}, "
                f"{sum(self.skipped.values())} skipped ({reasons}); {self.done_before} done by an earlier run; "
                f"{self.processed_this_run} processed now in {self.seconds:.1f} s ({self.images_per_s:.1f} images/s); "
                f"skipped photos listed in {self.skipped_csv}")


def _output_names(files: list[str]) -> dict[str, str]:
    """Source relative path -> output relative path: .jpg/.jpeg/.png kept, anything else -> .png (or name.png if
    that would clash with another photo's output)."""
    out, taken = {}, {f for f in files if Path(f).suffix.lower() in OUTPUT_SUFFIXES}
    for rel in files:
        if Path(rel).suffix.lower() in OUTPUT_SUFFIXES:
            out[rel] = rel
            continue
        name = str(Path(rel).with_suffix(".png").as_posix())
        out[rel] = name if name not in taken else rel + ".png"
        taken.add(out[rel])
    return out


def _scan(root: Path) -> tuple[list[str], set[str]]:
    """All files under root (relative posix paths, sorted) with an image extension, and every other file but
    fr_lib's own reports, lock and settings (fr_lib.data.scan.is_own_file; temp files are in the second set)."""
    images, others = [], set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root)
        for name in filenames:
            rel = (rel_dir / name).as_posix()
            if is_own_file(rel) and not is_temp_file(name):
                continue
            if image_file_problem(name) is None:   # what `fr data stats` counts as an image, too
                images.append(rel)
            else:
                others.add(rel)
    return sorted(images), others




def _read_skip_log(path: Path) -> dict[str, tuple[str, str]]:
    """rel path -> (reason, detail). A torn last line (the run was killed mid-append) is cut off."""
    if not path.exists():
        return {}
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        with open(path, "r+b") as f:
            f.truncate(len(raw))
    entries = {}
    for row in csv.reader(io.StringIO(raw.decode("utf-8"))):
        if len(row) == 3:
            entries[row[0]] = (row[1], row[2])
    return entries


def _check_settings(dst: Path, settings: dict) -> None:
    path = dst / SETTINGS
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != settings:
            raise ValueError(f"{dst} holds crops made with {previous}, not {settings}: "
                             "use another DST folder (or delete this one) to change the alignment settings")
    else:
        atomic_write(path, json.dumps(settings, indent=1))


def _write_skipped_csv(path: Path, skip_log: dict[str, tuple[str, str]], present: set[str]) -> list[tuple]:
    """Atomically write every logged skip (this run's and earlier runs') of photos still under SRC, sorted by
    path -> the rows (path, reason, detail)."""
    rows = sorted((rel, reason, detail) for rel, (reason, detail) in skip_log.items() if rel in present)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "reason", "detail"])
    writer.writerows(rows)
    atomic_write(path, buffer.getvalue())
    return rows


def _encode(crop: np.ndarray, suffix: str, quality: int) -> bytes:
    buffer = io.BytesIO()
    if suffix.lower() == ".png":
        Image.fromarray(crop).save(buffer, format="PNG")
    else:
        Image.fromarray(crop).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def align_folder(src, dst, size: int = 112, mode: str = "similarity", device: str = "cpu", batch_size: int = 32,
                 workers: int = 4, policy: str = "largest", min_face_size: int = 32, max_side: int | None = 1024,
                 quality: int = 95, progress: bool = True) -> AlignSummary:
    """Detect, pick and align one face per photo of SRC/<identity>/<photo> into DST/<identity>/<photo>.

    size: side of the square crops, px (112 ArcFace-style, 160 InceptionResnetV1). mode: 'similarity' (5-point
    warp onto the ArcFace template) or 'crop' (facenet's box + margin). device/batch_size: MTCNN's torch device and
    photos per detection batch. workers: decode/encode threads. policy: which face to keep when there are several
    (see select_face; 'skip' skips such photos). min_face_size: smallest kept face (shorter box side, px of the
    photo; smaller faces or photos -> 'face too small'). max_side: photos larger than this are downscaled for
    detection only. quality: JPEG quality of .jpg outputs.

    Photos that cannot be decoded, or have no usable face, are skipped and listed in DST/skipped.csv with their
    reason (unreadable / no face / several faces / face too small). Rerunning resumes; changing size, mode, policy
    or min_face_size on an existing DST raises ValueError. Raises ValueError when SRC holds no image file.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise ValueError(f"source folder {src} does not exist or is not a folder")
    if mode not in ALIGN_MODES:
        raise ValueError(f"unknown alignment mode {mode!r}; choose one of {ALIGN_MODES}")
    if policy not in POLICIES:
        raise ValueError(f"unknown face policy {policy!r}; choose one of {POLICIES}")
    if size < 16:
        raise ValueError(f"crop size must be at least 16 px, got {size}")
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise ValueError(f"destination {dst} must not be inside the source folder {src}")
    files, _ = _scan(src)
    if not files:
        raise ValueError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {src}")
    start = time.perf_counter()
    dst.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(dst):
        return _align_locked(src, dst, files, start, size, mode, device, batch_size, workers, policy, min_face_size,
                             max_side, quality, progress)


@contextlib.contextmanager
def _exclusive_lock(dst: Path):
    """One align_folder run per DST at a time: a second one would write the same crops and interleave skip logs.
    An advisory flock on DST/.fr_align.lock, released when the run ends (also when it is killed)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): unguarded, as before
        yield
        return
    with open(dst / LOCK_FILE, "a") as fh:   # stays empty: DST's content does not depend on who wrote it
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{dst} is being written by another fr align run; wait for it to finish or choose "
                             f"another destination") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _align_locked(src: Path, dst: Path, files: list[str], start: float, size, mode, device, batch_size, workers,
                  policy, min_face_size, max_side, quality, progress) -> AlignSummary:
    _check_settings(dst, {"size": size, "mode": mode, "policy": policy, "min_face_size": min_face_size})
    outputs = _output_names(files)
    existing, others = _scan(dst)
    for rel in others:  # temporary files of a killed run: never complete, delete
        if is_temp_file(rel):
            (dst / rel).unlink(missing_ok=True)
    existing = set(existing)
    log_path = dst / SKIP_LOG
    skip_log = _read_skip_log(log_path)
    todo = [rel for rel in files if outputs[rel] not in existing and rel not in skip_log]
    done_before = len(files) - len(todo)

    detector = build_detector(str(device))
    max_chunk = batch_size * 4  # photos decoded ahead while the previous chunk is detected
    position = 0

    def next_chunk(length: int) -> list[str]:
        nonlocal position
        chunk = todo[position:position + length]
        position += len(chunk)
        return chunk

    def load(rel: str):
        try:
            return read_rgb(src / rel), None
        except Exception as e:  # any decode failure is a per-photo skip, never a crash of the run
            message = str(e).replace(str(src / rel), rel).replace("\n", " ")  # no absolute paths in skipped.csv
            return None, f"{type(e).__name__}: {message}"[:300]

    def write(rel: str, image: np.ndarray, face) -> tuple[str, str | None]:
        """Align and write one crop -> (rel, None), or (rel, why) when the landmarks admit no transform."""
        try:
            crop = (align_face(image, face.landmarks, size) if mode == "similarity"
                    else crop_face(image, face.box, size))
        except ValueError as e:  # degenerate landmarks (coincident points): a per-photo skip
            return rel, str(e)
        out = dst / outputs[rel]
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, _encode(crop, out.suffix, quality))  # disk errors do stop the run
        return rel, None

    from fr_lib.progress import progress_bar

    counts: Counter = Counter()
    bar = progress_bar(total=len(todo), unit="img", desc=f"align ({done_before} done before)", disable=not progress,
               dynamic_ncols=True)
    with open(log_path, "a", encoding="utf-8", newline="") as log, ThreadPoolExecutor(max(1, workers)) as pool:
        logger = csv.writer(log, lineterminator="\n")

        def skip(rel: str, reason: str, detail: str = "") -> None:
            skip_log[rel] = (reason, detail)
            logger.writerow([rel, reason, detail])
            log.flush()
            counts[reason] += 1

        def finish(future: Future) -> None:
            rel, error = future.result()
            if error is not None:
                skip(rel, NO_FACE, error)

        pending: list[Future] = []
        chunk = next_chunk(min(max_chunk, 4))  # small first chunk: photo sizes are unknown until decoded
        loads = [pool.submit(load, rel) for rel in chunk]
        try:
            while chunk:
                decoded = [f.result() for f in loads]
                # size the next chunk so the decoded photos held at once stay within CHUNK_BYTES
                # (128 photos of 6000x4000 would be 9 GB; 128 of CASIA-WebFace's 250x250, 24 MB)
                nbytes = [image.nbytes for image, _ in decoded if image is not None] or [1]
                upcoming = next_chunk(int(np.clip(CHUNK_BYTES // max(np.mean(nbytes), 1), 1, max_chunk)))
                loads = [pool.submit(load, rel) for rel in upcoming]
                usable = []
                for rel, (image, error) in zip(chunk, decoded):
                    if image is None:
                        skip(rel, UNREADABLE, error)
                    elif min(image.shape[:2]) < min_face_size:
                        skip(rel, FACE_TOO_SMALL, f"photo is {image.shape[1]}x{image.shape[0]} px")
                    else:
                        usable.append((rel, image))
                detections = detect_faces([image for _, image in usable], batch_size=batch_size,
                                          max_side=max_side, detector=detector)
                for f in pending:  # the previous chunk's crops: written while this chunk was detected
                    finish(f)
                bar.update(len(chunk) - len(usable) + len(pending))
                pending = []
                for (rel, image), faces in zip(usable, detections):
                    face, reason = select_face(faces, image.shape, policy, min_face_size)
                    if face is None:
                        detail = ("" if not faces else f"{len(faces)} faces" if reason == SEVERAL_FACES
                                  else f"largest face {max(f.size for f in faces):.0f} px")
                        skip(rel, reason, detail)
                        bar.update(1)
                    else:
                        pending.append(pool.submit(write, rel, image, face))
                bar.set_postfix(skipped=sum(counts.values()), refresh=False)
                chunk = upcoming
            for f in pending:
                finish(f)
            bar.update(len(pending))
        finally:
            for f in loads + pending:
                f.cancel()
            bar.close()
            rows = _write_skipped_csv(dst / SKIPPED_CSV, skip_log, set(files))  # also when interrupted
    aligned = sum(1 for rel in files if (dst / outputs[rel]).exists())
    return AlignSummary(src=src, dst=dst, total=len(files), aligned=aligned,
                        skipped=dict(Counter(reason for _, reason, _ in rows)), done_before=done_before,
                        processed_this_run=len(todo), seconds=time.perf_counter() - start,
                        skipped_csv=dst / SKIPPED_CSV, skipped_paths=[(rel, reason) for rel, reason, _ in rows])
