"""Approximate nearest-face search (FAISS) behind the Gallery interface, with SQLite the source of truth.

    >>> gallery = open_gallery("gallery.sqlite", pipeline, threshold=0.42)   # exact below EXACT_BELOW faces
    >>> gallery = IndexedGallery("gallery.sqlite", pipeline, threshold=0.42, nprobe=32)
    >>> gallery.search(query_embeddings)[0].name

:class:`IndexedGallery` is a :class:`~fr_lib.recognition.gallery.Gallery` (same file, same writes, same answers)
whose ``search`` asks a FAISS index for the nearest face instead of scoring every enrolled face. The index is
never the record: it is rebuilt from SQLite when the gallery opens, and brought up to date from SQLite before a
search whenever the database changed (``PRAGMA data_version`` sees other processes' commits; our own writes bump a
counter) and right after every enroll / delete. New faces are found by ``face_id`` (AUTOINCREMENT: ids only
grow), deleted ones by comparing the indexed ids with SQLite's when the counts disagree. A process killed between
the SQLite commit and the index update therefore loses nothing: the next open (or the next search of any other
process) rebuilds or updates the index from the committed rows.

Index kinds (``kind``): 'ivf' (IndexIVFFlat, inner product = cosine on unit vectors; ``nlist`` ~ 2 sqrt(N)
k-means cells trained on a sample, ``nprobe`` (default 16) cells scanned per query; it stores full vectors, so
the similarity it returns is exact for the face it finds), 'hnsw' (IndexHNSWFlat, M=32; deletions rebuild it) and 'flat' (exact
FAISS search, the reference). Below ``min_train`` faces an 'ivf' gallery searches exactly (flat) until it is large
enough to train, and it retrains when it has grown 4x since the last training. benchmarks/gallery.py measures the
kinds against exact search (latency, build time, memory, recall@1, open-set decision agreement) at 10^5 and 10^6
faces; EXACT_BELOW is where the measured IVF search becomes faster than Gallery's exact one.

Only the 'max' aggregation (the best face decides, IndexedGallery's default) is approximate; 'mean' and 'centroid'
(Gallery's default) need every face of each person and fall back to Gallery's exact search.
"""
from __future__ import annotations

import threading

import numpy as np

from fr_lib.recognition.gallery import UNKNOWN, Gallery, Match

KINDS = ("ivf", "hnsw", "flat")
# measured (benchmarks/gallery.py, docs/deployment.md): at 20k faces exact search took 0.4x the time of IVF, at
# 100k IVF nprobe=16 took a tenth of exact's; nprobe=16 gave recall@1 = 1.000 at 10^5 and 10^6 faces (8: 0.998)
EXACT_BELOW = 50_000      # faces
DEFAULT_NPROBE = 16
_READ_CHUNK = 50_000      # rows per SQLite read when (re)building


def _faiss():
    try:
        import faiss
    except ImportError as e:
        raise ImportError("an approximate gallery index needs faiss: pip install 'fr_lib[faiss]'") from e
    return faiss


def open_gallery(path, pipeline=None, *, index: str = "auto", exact_below: int = EXACT_BELOW, **kwargs) -> Gallery:
    """A Gallery (exact search) or an IndexedGallery: ``index`` 'exact', one of KINDS, or 'auto' (exact below
    ``exact_below`` enrolled faces, else 'ivf'). Other keyword arguments go to Gallery / IndexedGallery."""
    if index == "exact":
        return Gallery(path, pipeline, **kwargs)
    if index == "auto":
        gallery = Gallery(path, pipeline, **kwargs)
        if gallery.num_faces() < exact_below:
            return gallery
        gallery.close()
        index = "ivf"
    if index not in KINDS:
        raise ValueError(f"unknown gallery index {index!r}; choose 'auto', 'exact' or one of {KINDS}")
    return IndexedGallery(path, pipeline, kind=index, **kwargs)


class IndexedGallery(Gallery):
    """A Gallery searched through a FAISS index kept in step with the SQLite file.

    Args (besides Gallery's): kind: 'ivf' | 'hnsw' | 'flat'. nprobe: IVF cells scanned per query (recall vs
    latency). nlist: IVF cells (default ~2 sqrt(N), at least 16). min_train: fewest faces for an IVF index (below:
    exact flat search). ef_search: HNSW search breadth. threads: FAISS OpenMP threads (None: FAISS's default).
    """

    def __init__(self, path, pipeline=None, *, kind: str = "ivf", nprobe: int = DEFAULT_NPROBE,
                 nlist: int | None = None, min_train: int = 10_000, ef_search: int = 128,
                 threads: int | None = None, **kwargs):
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}; choose one of {KINDS}")
        self._faiss = _faiss()
        if threads is not None:
            self._faiss.omp_set_num_threads(int(threads))
        self.kind, self.nprobe, self.nlist, self.min_train, self.ef_search = kind, int(nprobe), nlist, min_train, \
            int(ef_search)
        self._index = None
        self._ids = np.zeros(0, np.int64)      # face_ids in the index, sorted
        self._synced = None                    # (data_version, own_version) the index reflects
        self._trained_at = 0
        self._index_lock = threading.RLock()
        # the index answers the nearest face: 'max' unless asked (Gallery's own default, 'centroid', is exact)
        kwargs.setdefault("aggregation", "max")
        super().__init__(path, pipeline, **kwargs)
        self.rebuild()

    # ------------------------------------------------------------------------------------------- index
    def _version(self):
        with self._lock:
            return self._db.execute("PRAGMA data_version").fetchone()[0], self._own_version

    def _rows(self, sql: str, params=()):
        """(face_ids (n,) int64, embeddings (n, D) float32) of a SELECT face_id, embedding ... query."""
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        vectors = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), self.embedding_size)
        return ids, vectors

    def _nlist(self, n: int) -> int:
        return int(self.nlist or max(16, int(2 * np.sqrt(n))))

    def _new_index(self, n: int, sample: np.ndarray | None):
        """-> (empty FAISS index taking add_with_ids, number of faces an IVF was trained for or 0)."""
        faiss, d = self._faiss, self.embedding_size
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
            index.hnsw.efSearch = self.ef_search
            return faiss.IndexIDMap2(index), n
        if self.kind == "flat" or sample is None:
            return faiss.IndexIDMap2(faiss.IndexFlatIP(d)), 0
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, self._nlist(n), faiss.METRIC_INNER_PRODUCT)
        index.train(np.ascontiguousarray(sample))
        index.nprobe = self.nprobe
        return index, n

    def rebuild(self) -> None:
        """Build the index from every face in SQLite (on open; after a large growth; after HNSW deletions)."""
        with self._index_lock:
            version = self._version()
            n = self.num_faces()
            sample = None
            if self.kind == "ivf" and n >= self.min_train:
                k = min(n, 40 * self._nlist(n))   # FAISS wants >= 39 training points per cell
                # every (n // k)-th face: a spread over enrollment order, not the first k enrolled
                _, sample = self._rows("SELECT face_id, embedding FROM faces WHERE face_id % ? = 0 LIMIT ?",
                                       (max(1, n // k), k))
                if len(sample) < 39 * self._nlist(n):   # ids with gaps (deletions): take the first k
                    _, sample = self._rows("SELECT face_id, embedding FROM faces LIMIT ?", (k,))
            index, trained_at = self._new_index(n, sample)
            ids_all, last = [], 0
            while True:
                ids, vectors = self._rows("SELECT face_id, embedding FROM faces WHERE face_id > ? ORDER BY face_id "
                                          "LIMIT ?", (last, _READ_CHUNK))
                if not len(ids):
                    break
                index.add_with_ids(np.ascontiguousarray(vectors), ids)
                ids_all.append(ids)
                last = int(ids[-1])
            self._index, self._trained_at = index, trained_at
            self._ids = np.concatenate(ids_all) if ids_all else np.zeros(0, np.int64)
            self._synced = version

    def sync(self) -> None:
        """Bring the index up to SQLite's state: add faces with a face_id above the last indexed one, remove the
        indexed faces SQLite no longer holds. Cheap when nothing changed (one PRAGMA)."""
        with self._index_lock:
            version = self._version()
            if version == self._synced:
                return
            last = int(self._ids[-1]) if len(self._ids) else 0
            ids, vectors = self._rows("SELECT face_id, embedding FROM faces WHERE face_id > ? ORDER BY face_id",
                                      (last,))
            if len(ids):
                self._index.add_with_ids(np.ascontiguousarray(vectors), ids)
                self._ids = np.concatenate([self._ids, ids])
            n = self.num_faces()
            if n != len(self._ids):   # some faces were deleted (or replaced)
                current = np.fromiter((r[0] for r in self._read("SELECT face_id FROM faces")), np.int64)
                gone = np.setdiff1d(self._ids, current, assume_unique=True)
                if self.kind == "hnsw":  # HNSW cannot delete
                    self.rebuild()
                    return
                self._index.remove_ids(gone)
                self._ids = np.setdiff1d(self._ids, gone, assume_unique=True)
            grown = self.kind == "ivf" and n >= self.min_train and n > 4 * max(self._trained_at, 1)
            if grown:                   # cells trained on a quarter of today's faces: retrain
                self.rebuild()
                return
            self._synced = version

    def index_size(self) -> int:
        """Faces in the index (equals num_faces() after sync())."""
        return int(self._index.ntotal)

    def _after_write(self) -> None:
        """Called right after each committed write: the index catches up with SQLite."""
        self.sync()

    # ------------------------------------------------------------------------------------------- writes
    def add_person(self, *args, **kwargs):
        person = super().add_person(*args, **kwargs)
        self._after_write()
        return person

    def add_people(self, *args, **kwargs):
        people = super().add_people(*args, **kwargs)
        self._after_write()
        return people

    def remove(self, person_id: str) -> None:
        super().remove(person_id)
        self._after_write()

    # ------------------------------------------------------------------------------------------- search
    def nearest_faces(self, queries, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) queries -> (similarities (Q, k) float32 cosine, face_ids (Q, k) int64; -1 where fewer faces)."""
        q = self._as_embeddings(queries)
        self.sync()
        with self._index_lock:
            if self._index.ntotal == 0:
                return np.full((len(q), k), np.nan, np.float32), np.full((len(q), k), -1, np.int64)
            return self._index.search(q, k)

    def search(self, queries, threshold: float | None = None, aggregation: str | None = None) -> list[Match]:
        """Nearest enrolled face for each query through the index (aggregation 'max'); 'mean' and 'centroid'
        use Gallery's exact search."""
        aggregation = self.aggregation if aggregation is None else aggregation
        if aggregation != "max":
            return super().search(queries, threshold, aggregation)
        threshold = self.threshold if threshold is None else float(threshold)
        sims, ids = self.nearest_faces(queries, 1)
        owners = {}
        wanted = sorted({int(i) for i in ids[:, 0] if i >= 0})
        if wanted:
            marks = ",".join("?" * len(wanted))
            owners = {r[0]: (r[1], r[2]) for r in self._read(
                f"SELECT f.face_id, f.person_id, p.name FROM faces f JOIN people p USING (person_id) "
                f"WHERE f.face_id IN ({marks})", wanted)}
        out = []
        for s, i in zip(sims[:, 0], ids[:, 0]):
            if int(i) not in owners:  # empty gallery, or the face was deleted after the search: nothing found
                out.append(Match(None, UNKNOWN, float("nan"), aggregation="max"))
                continue
            pid, name = owners[int(i)]
            accepted = float(s) > threshold
            out.append(Match(pid if accepted else None, name if accepted else UNKNOWN, float(s), pid, name, "max"))
        return out
