"""A gallery of enrolled people stored in SQLite, with exact nearest-neighbour search and 'Unknown' rejection.

    >>> gallery = Gallery("gallery.sqlite", pipeline=pipeline, threshold=0.42)
    >>> gallery.enroll_folder("people_faces/")          # one folder per person, one or more photos each
    >>> [(f.name, round(f.similarity, 2)) for f in gallery.identify("group.jpg")]
    [('Eileen Collins', 0.81), ('Unknown', 0.12)]

Storage: one SQLite file (``people``: person_id, name; ``faces``: one L2-normalised float32 embedding per enrolled
photo; ``meta``: the model name and embedding_size the gallery was built with). Opening a gallery with another model
raises :class:`GalleryModelMismatch` -- embeddings of two models live in unrelated spaces and must never be mixed.
WAL journal, ``BEGIN IMMEDIATE`` transactions and a busy timeout make concurrent writers (threads of one server,
or several processes) safe: every enrollment is one transaction, so a record is never half-written, lost or
duplicated; ``synchronous=FULL`` keeps a committed record across a crash.

Search is exact: the enrolled embeddings are kept as one (N, D) float32 matrix (re-read only when the database
changed, detected with ``PRAGMA data_version``) and a query batch is scored with one matrix product, cosine
similarity = dot product of unit vectors. A person enrolled with several photos gets one score from them
(``aggregation``, fr_lib.recognition.voting: by default the cosine to the centroid of their embeddings, which
identified best in docs/voters.md; 'max' = the nearest face, 'mean' = the voters' mean); the best person's score
at or below the threshold is 'Unknown' (the ID-rate protocol counts a positive only when s > threshold).
"""
from __future__ import annotations

import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from fr_lib.recognition.voting import DEFAULT_AGGREGATION, check_aggregation, group_faces, person_scores

UNKNOWN = "Unknown"
PERSON_ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,127}$"
_PERSON_ID_RE = re.compile(PERSON_ID_PATTERN)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".pgm", ".ppm"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS people (
    person_id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS faces (
    face_id INTEGER PRIMARY KEY AUTOINCREMENT,
    person_id TEXT NOT NULL REFERENCES people(person_id) ON DELETE CASCADE,
    embedding BLOB NOT NULL,
    source TEXT);
CREATE INDEX IF NOT EXISTS faces_person ON faces(person_id);
"""


class GalleryError(ValueError):
    """Base class of the gallery's input errors (bad id, bad embedding, wrong model, ...)."""


class GalleryModelMismatch(GalleryError):
    """The gallery file was built with another model or embedding size."""


class PersonExistsError(GalleryError):
    """A person with this id is already enrolled (pass ``exist_ok=True`` to add faces, ``replace=True`` to redo)."""


class UnknownPersonError(KeyError):
    """No person with this id is enrolled."""

    def __str__(self) -> str:  # KeyError's default repr-quotes the message
        return str(self.args[0]) if self.args else "unknown person"


@dataclass(frozen=True)
class Person:
    person_id: str
    name: str
    num_faces: int
    created_at: float  # seconds since the epoch (UTC)


@dataclass(frozen=True)
class Match:
    """Best enrolled face for one query: ``person_id``/``name`` are None/'Unknown' when ``similarity`` <= threshold
    or the gallery is empty (then ``similarity`` is nan). ``best_person_id``/``best_name`` keep the nearest person
    even when rejected. ``aggregation``: how a person's photos made ``similarity`` (fr_lib.recognition.voting:
    'mean' of the per-photo cosines, 'max', or the cosine to the 'centroid')."""
    person_id: str | None
    name: str
    similarity: float
    best_person_id: str | None = None
    best_name: str | None = None
    aggregation: str = "max"


@dataclass(frozen=True)
class Identification:
    """One face found in a photo: ``box`` (4,) x1, y1, x2, y2 in pixels; ``landmarks`` (5, 2) pixels or None;
    ``prob`` the detector's face probability; then the gallery's answer."""
    box: np.ndarray
    landmarks: np.ndarray | None
    prob: float
    person_id: str | None
    name: str
    similarity: float


@dataclass
class EnrollReport:
    """What ``enroll_folder`` did: faces enrolled per person_id, and every photo skipped with its reason."""
    enrolled: dict[str, int] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        faces = sum(self.enrolled.values())
        text = f"enrolled {len(self.enrolled)} people ({faces} faces)"
        if self.skipped:
            text += f"; skipped {len(self.skipped)}: " + "; ".join(f"{p}: {r}" for p, r in self.skipped[:10])
            if len(self.skipped) > 10:
                text += f"; ... ({len(self.skipped) - 10} more)"
        return text


def validate_person_id(person_id: str) -> str:
    """Return ``person_id`` if it matches PERSON_ID_PATTERN (letters, digits, ``_ . @ -``, 1-128 chars, not starting
    with ``.`` or ``-``), else raise GalleryError naming it."""
    if not isinstance(person_id, str) or not _PERSON_ID_RE.match(person_id):
        raise GalleryError(f"invalid person_id {person_id!r}: must match {PERSON_ID_PATTERN}")
    return person_id


def slugify_person_id(folder_name: str) -> str:
    """A valid person_id made from a folder name ('Eileen Collins' -> 'Eileen_Collins')."""
    slug = re.sub(r"[^A-Za-z0-9_.@-]+", "_", folder_name.strip()).lstrip(".-") or "_"
    return slug[:128]


class Gallery:
    """Enrolled people in an SQLite file (``":memory:"`` for a throw-away gallery).

    Args:
        path: the SQLite file (created with its parent folder if missing).
        pipeline: a :class:`fr_lib.recognition.pipeline.FacePipeline`; needed by the photo methods (enroll_image,
            enroll_folder, identify), not by the embedding ones. Gives model_name and embedding_size.
        model_name, embedding_size: identify the embedding space; taken from the pipeline, or from the file when
            it exists already. A file built with other values raises GalleryModelMismatch.
        threshold: cosine similarity above which the nearest person is accepted (else 'Unknown').
        timeout: seconds a writer waits for another writer's lock before failing.
        aggregation: how a person's several photos give one score (fr_lib.recognition.voting.AGGREGATIONS:
            'mean', 'max', 'centroid'); the default is the one docs/voters.md measured best.
    """

    def __init__(self, path: str | Path, pipeline=None, *, model_name: str | None = None,
                 embedding_size: int | None = None, threshold: float = 0.5, timeout: float = 30.0,
                 aggregation: str = DEFAULT_AGGREGATION):
        if pipeline is not None:
            for given, own, what in ((model_name, pipeline.model_name, "model_name"),
                                     (embedding_size, pipeline.embedding_size, "embedding_size")):
                if given is not None and given != own:
                    raise GalleryError(f"{what}={given!r} disagrees with the pipeline's {own!r}")
            model_name, embedding_size = pipeline.model_name, int(pipeline.embedding_size)
        self.path = str(path)
        self.pipeline = pipeline
        self.threshold = float(threshold)
        self.aggregation = check_aggregation(aggregation)
        self._groups: tuple | None = None  # (face matrix, person ids, names, PersonGroups) of the cached matrix
        self._lock = threading.RLock()   # one connection per Gallery, shared by the threads of a server
        self._cache: tuple | None = None  # (data_version, own_version, matrix, person_ids, names)
        self._own_version = 0
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA foreign_keys=ON")
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
            with self._transaction() as db:
                for statement in filter(str.strip, _SCHEMA.split(";")):  # idempotent (IF NOT EXISTS)
                    db.execute(statement)
        except sqlite3.DatabaseError as e:
            raise GalleryError(f"{self.path} is not a usable SQLite gallery: {e}") from e
        self.model_name, self.embedding_size = self._check_model(model_name, embedding_size)

    # ------------------------------------------------------------------------------------------ plumbing
    def _transaction(self):
        gallery = self

        class _Tx:
            def __enter__(self_inner):
                gallery._lock.acquire()
                try:
                    gallery._db.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlock
                except BaseException:
                    gallery._lock.release()
                    raise
                return gallery._db

            def __exit__(self_inner, exc_type, exc, tb):
                try:
                    gallery._db.execute("ROLLBACK" if exc_type else "COMMIT")
                    if exc_type is None:
                        gallery._own_version += 1
                finally:
                    gallery._lock.release()
                return False

        return _Tx()

    def _read(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _check_model(self, model_name, embedding_size) -> tuple[str, int]:
        with self._transaction() as db:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if not meta:
                if model_name is None or embedding_size is None:
                    raise GalleryError(f"{self.path} is a new gallery: give a pipeline (or model_name and "
                                       "embedding_size) to create it")
                db.executemany("INSERT INTO meta VALUES (?, ?)",
                               [("model_name", str(model_name)), ("embedding_size", str(int(embedding_size))),
                                ("created_at", repr(time.time()))])
                return str(model_name), int(embedding_size)
        stored = (meta["model_name"], int(meta["embedding_size"]))
        wanted = (stored[0] if model_name is None else str(model_name),
                  stored[1] if embedding_size is None else int(embedding_size))
        if wanted != stored:
            raise GalleryModelMismatch(
                f"{self.path} was built with model {stored[0]!r} (embedding_size {stored[1]}), not "
                f"{wanted[0]!r} (embedding_size {wanted[1]}): embeddings of different models cannot be mixed; "
                "use another gallery file or delete this one and enroll again")
        return stored

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _as_embeddings(self, embeddings) -> np.ndarray:
        """Validate and L2-normalise (N, D) or (D,) embeddings -> (N, D) float32."""
        e = np.asarray(embeddings, dtype=np.float64)
        if e.ndim == 1:
            e = e[None]
        if e.ndim != 2 or e.shape[1] != self.embedding_size:
            raise GalleryError(f"embedding has shape {tuple(np.shape(embeddings))}; this gallery "
                               f"({self.model_name}) needs embedding_size {self.embedding_size}")
        if not np.isfinite(e).all():
            raise GalleryError("embedding contains NaN or infinite values")
        peak = np.abs(e).max(axis=1, keepdims=True) if e.size else np.ones((len(e), 1))
        if (peak == 0).any():
            raise GalleryError("embedding has zero norm")
        e = e / peak  # scale first: the norm of 1e200-sized values would overflow
        return np.ascontiguousarray(e / np.linalg.norm(e, axis=1, keepdims=True), dtype=np.float32)

    # ------------------------------------------------------------------------------------------ writes
    def _prepare(self, person_id, name, embeddings, sources):
        validate_person_id(person_id)
        name = person_id if name is None else str(name)
        if not name.strip() or len(name) > 256:
            raise GalleryError(f"invalid name {name!r}: 1-256 characters, not only spaces")
        emb = self._as_embeddings(embeddings) if embeddings is not None else np.zeros((0, self.embedding_size))
        if len(emb) == 0:
            raise GalleryError(f"no embedding given for {person_id!r}")
        sources = list(sources) if sources is not None else [None] * len(emb)
        if len(sources) != len(emb):
            raise GalleryError(f"{len(sources)} sources for {len(emb)} embeddings")
        return person_id, name, emb, sources

    @staticmethod
    def _write(db, person_id, name, emb, sources, exist_ok, replace) -> Person:
        row = db.execute("SELECT created_at FROM people WHERE person_id=?", (person_id,)).fetchone()
        if row is None:
            created = time.time()
            db.execute("INSERT INTO people VALUES (?, ?, ?)", (person_id, name, created))
        elif replace or exist_ok:
            created = row[0]
            db.execute("UPDATE people SET name=? WHERE person_id=?", (name, person_id))
            if replace:
                db.execute("DELETE FROM faces WHERE person_id=?", (person_id,))
        else:
            raise PersonExistsError(f"person {person_id!r} is already enrolled")
        db.executemany("INSERT INTO faces (person_id, embedding, source) VALUES (?, ?, ?)",
                       [(person_id, e.tobytes(), s) for e, s in zip(emb, sources)])
        n = db.execute("SELECT COUNT(*) FROM faces WHERE person_id=?", (person_id,)).fetchone()[0]
        return Person(person_id, name, n, created)

    def add_person(self, person_id: str, name: str | None = None, embeddings=None, *, sources: Sequence[str] | None
                   = None, exist_ok: bool = False, replace: bool = False) -> Person:
        """Enroll ``person_id`` with (N, D) ``embeddings`` (N >= 1) in one transaction.

        An existing id raises PersonExistsError unless ``exist_ok`` (faces are appended, the name kept unless given)
        or ``replace`` (the person's faces are replaced by these).
        """
        record = self._prepare(person_id, name, embeddings, sources)
        with self._transaction() as db:
            return self._write(db, *record, exist_ok, replace)

    def add_people(self, records, *, exist_ok: bool = False, replace: bool = False) -> list[Person]:
        """Enroll many people in ONE transaction (all or nothing): ``records`` is an iterable of
        (person_id, name, (N, D) embeddings) or (person_id, name, embeddings, sources) tuples."""
        prepared = [self._prepare(r[0], r[1], r[2], r[3] if len(r) > 3 else None) for r in records]
        with self._transaction() as db:
            return [self._write(db, *record, exist_ok, replace) for record in prepared]

    def remove(self, person_id: str) -> None:
        """Delete a person and all their faces; UnknownPersonError if not enrolled."""
        validate_person_id(person_id)
        with self._transaction() as db:
            if db.execute("DELETE FROM people WHERE person_id=?", (person_id,)).rowcount == 0:
                raise UnknownPersonError(f"no person {person_id!r} in the gallery")

    # ------------------------------------------------------------------------------------------ reads
    def get(self, person_id: str) -> Person | None:
        rows = self._read("SELECT p.person_id, p.name, COUNT(f.face_id), p.created_at FROM people p "
                          "LEFT JOIN faces f USING (person_id) WHERE p.person_id=? GROUP BY p.person_id",
                          (validate_person_id(person_id),))
        return Person(*rows[0]) if rows else None

    def __contains__(self, person_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM people WHERE person_id=?", (person_id,)))

    def __len__(self) -> int:
        return self._read("SELECT COUNT(*) FROM people")[0][0]

    def num_faces(self) -> int:
        return self._read("SELECT COUNT(*) FROM faces")[0][0]

    def list_people(self, page: int = 1, page_size: int = 50) -> tuple[list[Person], int]:
        """People ordered by person_id, ``page`` counted from 1 -> (people on that page, total number)."""
        if page < 1 or page_size < 1:
            raise GalleryError(f"page ({page}) and page_size ({page_size}) must be >= 1")
        page_size = min(page_size, 2**31)  # keep LIMIT/OFFSET inside SQLite's 64-bit integers
        page = min(page, 2**31)
        with self._lock:  # one read transaction: the page and the total agree
            self._db.execute("BEGIN")
            try:
                total = self._db.execute("SELECT COUNT(*) FROM people").fetchone()[0]
                rows = self._db.execute(
                    "SELECT p.person_id, p.name, (SELECT COUNT(*) FROM faces f WHERE f.person_id=p.person_id), "
                    "p.created_at FROM people p ORDER BY p.person_id LIMIT ? OFFSET ?",
                    (page_size, (page - 1) * page_size)).fetchall()
            finally:
                self._db.execute("COMMIT")
        return [Person(*r) for r in rows], total

    def embeddings(self) -> tuple[np.ndarray, list[str], list[str]]:
        """All enrolled faces -> (N, D) float32 unit vectors, person_id per row, name per row (cached)."""
        with self._lock:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]  # changes on others' commits
            if self._cache is None or self._cache[:2] != (version, self._own_version):
                rows = self._db.execute("SELECT f.embedding, f.person_id, p.name FROM faces f "
                                        "JOIN people p USING (person_id) ORDER BY f.face_id").fetchall()
                matrix = np.frombuffer(b"".join(r[0] for r in rows), dtype=np.float32)
                matrix = matrix.reshape(len(rows), self.embedding_size)
                self._cache = (version, self._own_version, matrix, [r[1] for r in rows], [r[2] for r in rows])
            return self._cache[2], self._cache[3], self._cache[4]

    def search(self, queries, threshold: float | None = None, aggregation: str | None = None) -> list[Match]:
        """Best enrolled person for each of (Q, D) query embeddings with one (Q, D) x (D, N) matrix product;
        ``aggregation`` (default: the gallery's) says how a person's photos give one score."""
        threshold = self.threshold if threshold is None else float(threshold)
        aggregation = self.aggregation if aggregation is None else check_aggregation(aggregation)
        q = self._as_embeddings(queries)
        matrix, person_ids, names = self.embeddings()
        if len(matrix) == 0:
            return [Match(None, UNKNOWN, float("nan"), aggregation=aggregation) for _ in q]
        if aggregation != "max":
            return self._search_people(q, matrix, person_ids, names, threshold, aggregation)
        if len(q) <= 4:  # (Q, N) cosine similarities
            # numpy's own loop, not BLAS: waking OpenBLAS's threads for a matrix-vector product cost ~20 ms on a
            # busy 2-core machine (measured; 0.1 ms this way for 1k faces, 25 ms for 100k -- benchmarks/gallery.py)
            sims = np.einsum("qd,nd->qn", q, matrix)
        else:
            sims = q @ matrix.T
        best = sims.argmax(axis=1)
        out = []
        for i, j in enumerate(best):
            s = float(sims[i, j])
            accepted = s > threshold
            out.append(Match(person_ids[j] if accepted else None, names[j] if accepted else UNKNOWN, s,
                             person_ids[j], names[j]))
        return out

    def _search_people(self, q, matrix, person_ids, names, threshold, aggregation) -> list[Match]:
        """search() for the aggregations that need all of a person's faces ('mean', 'centroid'): exact, over the
        faces grouped by person (grouping and centroids cached with the face matrix)."""
        if self._groups is None or self._groups[0] is not matrix:
            people, first, owners = np.unique(np.asarray(person_ids), return_index=True, return_inverse=True)
            self._groups = (matrix, list(people), [names[i] for i in first],
                            group_faces(matrix, owners.ravel(), len(people)))
        _, people, people_names, groups = self._groups
        scores = person_scores(q, matrix, groups, aggregation)
        out = []
        for row in scores:
            j = int(row.argmax())
            s = float(row[j])
            accepted = s > threshold
            out.append(Match(people[j] if accepted else None, people_names[j] if accepted else UNKNOWN, s,
                             people[j], people_names[j], aggregation))
        return out

    # ------------------------------------------------------------------------------------------ photos
    def _need_pipeline(self):
        if self.pipeline is None:
            raise GalleryError("this gallery was opened without a FacePipeline: photos cannot be embedded")
        return self.pipeline

    def identify(self, image, threshold: float | None = None, policy: str = "all",
                 aggregation: str | None = None) -> list[Identification]:
        """Every face of ``image`` (path, PIL image or HxWx3 uint8 array) with the gallery's answer (``aggregation``
        as in search).

        ``policy`` as in FacePipeline.embed_faces ('all', 'largest', 'single', 'aligned'). No face -> [].
        """
        faces = self._need_pipeline().embed_faces(image, policy=policy)
        if not faces:
            return []
        matches = self.search(np.stack([f.embedding for f in faces]), threshold, aggregation)
        return [Identification(f.box, f.landmarks, f.prob, m.person_id, m.name, m.similarity)
                for f, m in zip(faces, matches)]

    def enroll_image(self, person_id: str, image, name: str | None = None, *, policy: str = "largest",
                     exist_ok: bool = True, replace: bool = False) -> Person:
        """Enroll one photo of ``person_id`` (appended to their faces by default). A photo with no face raises
        GalleryError; with several faces ``policy='largest'`` takes the largest, 'single' refuses."""
        validate_person_id(person_id)
        faces = self._need_pipeline().embed_faces(image, policy=policy)
        if not faces:
            raise GalleryError(f"no face found in the photo for {person_id!r}")
        source = str(image) if isinstance(image, (str, Path)) else None
        return self.add_person(person_id, name, faces[0].embedding[None], sources=[source],
                               exist_ok=exist_ok, replace=replace)

    def enroll_folder(self, root: str | Path, *, policy: str = "largest", people: Sequence[str] | None = None,
                      max_photos: int | None = None, progress: bool = True) -> EnrollReport:
        """Enroll a people_faces/ folder: one sub-folder per person (its name is the person's name, its slug the
        person_id), one or more photos each. A person is re-enrolled from scratch (``replace``), so running it
        again on the same folder is idempotent. ``people``: only these sub-folders; ``max_photos``: at most this
        many photos per person (sorted by name). Unreadable photos and photos without a face are skipped and
        reported; a folder with no person or no usable photo raises GalleryError naming it."""
        from fr_lib.progress import progress_bar

        from fr_lib.recognition.pipeline import FaceCountError, ImageLoadError

        pipeline = self._need_pipeline()
        people_filter, root = people, Path(root)
        if not root.is_dir():
            raise GalleryError(f"people_faces folder {root} does not exist or is not a folder")
        people = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if people and (wanted := None if people_filter is None else set(people_filter)) is not None:
            missing = wanted - {p.name for p in people}
            if missing:
                raise GalleryError(f"no folder {sorted(missing)} in {root}")
            people = [p for p in people if p.name in wanted]
        if not people:
            raise GalleryError(f"people_faces folder {root} is empty: expected one sub-folder per person "
                               "holding that person's photos")
        ids: dict[str, str] = {}
        for folder in people:
            pid = slugify_person_id(folder.name)
            if pid in ids:
                raise GalleryError(f"folders {ids[pid]!r} and {folder.name!r} give the same person_id {pid!r}")
            ids[pid] = folder.name
        report = EnrollReport()
        photos = [(pid, f) for pid, name in ids.items()
                  for f in sorted(f for f in (root / name).iterdir() if f.is_file() and not f.name.startswith("."))
                  [:max_photos]]
        per_person: dict[str, list[tuple[np.ndarray, str]]] = {pid: [] for pid in ids}
        for pid, photo in progress_bar(photos, desc="enroll", unit="photo", disable=not progress):
            rel = str(photo.relative_to(root))
            if photo.suffix.lower() not in IMAGE_SUFFIXES:
                report.skipped.append((rel, f"not an image file (suffix {photo.suffix or 'none'})"))
                continue
            try:
                faces = pipeline.embed_faces(photo, policy=policy)
            except (ImageLoadError, FaceCountError) as e:  # unreadable; several faces with policy='single'
                report.skipped.append((rel, str(e)))
                continue
            if not faces:
                report.skipped.append((rel, "no face found"))
                continue
            per_person[pid].append((faces[0].embedding, rel))
        records = []
        for pid, items in per_person.items():
            if not items:
                report.skipped.append((ids[pid] + "/", "no usable photo: person not enrolled"))
                continue
            records.append((pid, ids[pid], np.stack([e for e, _ in items]), [s for _, s in items]))
            report.enrolled[pid] = len(items)
            report.names[pid] = ids[pid]
        if not report.enrolled:
            raise GalleryError(f"nothing enrolled from {root}: " + "; ".join(f"{p}: {r}" for p, r in report.skipped))
        self.add_people(records, replace=True)  # one transaction: the folder is enrolled whole or not at all
        return report
