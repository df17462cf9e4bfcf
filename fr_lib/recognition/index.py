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

Index kinds (``kind``): 'ivf' (IndexIVFFlat, inner product = cosine on unit vectors; ``nlist`` ~ 2 sqrt(n)
k-means cells for n indexed vectors, trained on a sample, ``nprobe`` (default 16) cells scanned per query; it stores
full vectors, so the similarity it returns is exact for what it finds), 'hnsw' (IndexHNSWFlat, M=32; deletions
rebuild it) and 'flat' (exact FAISS search, the reference). Below ``min_train`` vectors an 'ivf' gallery searches
exactly (flat) until it is large enough to train, and it retrains when it has grown 4x since the last training.
benchmarks/gallery.py measures the kinds against exact search (latency, build time, memory, recall@1, open-set
decision agreement) at 10^4 to 10^6 faces; below EXACT_BELOW exact search answers in a few ms without FAISS.

What the index holds follows the gallery's aggregation (fr_lib.recognition.voting): 'centroid' (Gallery's default)
indexes one unit centroid per person -- N / photos vectors, kept up to date for every person whose faces change --
and 'max' indexes every face (the nearest face decides). A search with the other of the two, or with 'mean' (every
face of every person is a voter), uses Gallery's exact search.
"""
from __future__ import annotations

import threading

import numpy as np

from fr_lib.recognition.gallery import UNKNOWN, Gallery, Match
from fr_lib.recognition.voting import centroids_from_sums

KINDS = ("ivf", "hnsw", "flat")
# measured on an idle 2-core CPU (benchmarks/gallery.py, docs/deployment.md): below ~5 x 10^4 faces exact search
# answers in a few ms ('max': 1.4 ms at 2 x 10^4; 'centroid': 0.09 ms) with no FAISS build; at 10^5 IVF nprobe=16
# is 15x ('max') / 5x ('centroid') faster, at 10^6 42x / 16x (1.6 / 0.7 ms); nprobe=16 gave recall@1 = 1.000 at
# 10^5 and 10^6 faces for both (nprobe=8: 0.998 / 0.994 at 10^6)
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

    Args (besides Gallery's, aggregation included): kind: 'ivf' | 'hnsw' | 'flat'. nprobe: IVF cells scanned per
    query (recall vs latency). nlist: IVF cells (default ~2 sqrt(vectors), at least 16). min_train: fewest vectors
    for an IVF index (below: exact flat search). ef_search: HNSW search breadth. threads: FAISS OpenMP threads
    (None: FAISS's default).

    ``indexed`` says what the index holds: 'people' (aggregation 'centroid': one unit centroid per person, keyed by
    the people table's rowid) or 'faces' (otherwise: every face, keyed by face_id).
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
        self._ids = np.zeros(0, np.int64)      # face_ids SQLite held at the last sync, sorted
        self._owners = np.zeros(0, np.int64)   # the people rowid of each of them
        self._synced = None                    # (data_version, own_version) the index reflects
        self._trained_at = 0
        self._index_lock = threading.RLock()
        super().__init__(path, pipeline, **kwargs)
        self.indexed = "people" if self.aggregation == "centroid" else "faces"
        self._answers = "centroid" if self.indexed == "people" else "max"
        self.rebuild()

    # ------------------------------------------------------------------------------------------- index
    def _version(self):
        with self._lock:
            return self._db.execute("PRAGMA data_version").fetchone()[0], self._own_version

    def _rows(self, where: str = "", params=(), limit: int | None = None, with_vectors: bool = True):
        """(face_ids (n,), people rowids (n,), embeddings (n, D) float32, or (n, 0) without ``with_vectors``) of
        the faces matching ``where``, in face_id order."""
        column = "f.embedding" if with_vectors else "x''"   # x'': an empty blob, nothing read from the row
        sql = (f"SELECT f.face_id, p.rowid, {column} FROM faces f JOIN people p USING (person_id) "
               + (f"WHERE {where} " if where else "") + "ORDER BY f.face_id"
               + (f" LIMIT {int(limit)}" if limit else ""))
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        owners = np.fromiter((r[1] for r in rows), np.int64, len(rows))
        width = self.embedding_size if with_vectors else 0
        vectors = np.frombuffer(b"".join(r[2] for r in rows), np.float32).reshape(len(rows), width)
        return ids, owners, vectors

    def _nlist(self, n: int) -> int:
        return int(self.nlist or max(16, int(2 * np.sqrt(n))))

    def _new_index(self, n: int, sample: np.ndarray | None):
        """-> (empty FAISS index taking add_with_ids, number of vectors an IVF was trained for or 0)."""
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

    def _wants_training(self, n: int) -> bool:
        return self.kind == "ivf" and n >= self.min_train

    @staticmethod
    def _sum_by_owner(owners: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """-> (sorted unique owners, float64 sum of their vectors)."""
        order = np.argsort(owners, kind="stable")
        keys, starts = np.unique(owners[order], return_index=True)
        return keys, np.add.reduceat(vectors[order].astype(np.float64), starts, axis=0)

    def _centroids(self, partial_keys: list, partial_sums: list) -> tuple[np.ndarray, np.ndarray]:
        """Per-chunk (_sum_by_owner) results -> (sorted people rowids, their unit centroids (k, D) float32)."""
        if not partial_keys:
            return np.zeros(0, np.int64), np.zeros((0, self.embedding_size), np.float32)
        keys, sums = self._sum_by_owner(np.concatenate(partial_keys), np.concatenate(partial_sums))
        return keys, centroids_from_sums(sums)

    def _centroids_of(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """People rowids -> (those that still have faces, their unit centroids (k, D) float32), read from SQLite."""
        found_keys, sums = [], []
        for start in range(0, len(keys), 10_000):   # below SQLite's limit on bound parameters
            chunk = [int(k) for k in keys[start:start + 10_000]]
            _, owners, vectors = self._rows(f"p.rowid IN ({','.join('?' * len(chunk))})", chunk)
            if len(owners):
                k, s = self._sum_by_owner(owners, vectors)
                found_keys.append(k)
                sums.append(s)
        return self._centroids(found_keys, sums)

    def rebuild(self) -> None:
        """Build the index from every face in SQLite (on open; after a large growth; after HNSW deletions)."""
        with self._index_lock:
            version = self._version()
            if self.indexed == "people":
                self._rebuild_people(version)
            else:
                self._rebuild_faces(version)

    def _read_all(self, per_chunk):
        """Every face in face_id order, _READ_CHUNK rows at a time: per_chunk(ids, owners, vectors)."""
        ids_all, owners_all, last = [], [], 0
        while True:
            ids, owners, vectors = self._rows("f.face_id > ?", (last,), limit=_READ_CHUNK)
            if not len(ids):
                break
            per_chunk(ids, owners, vectors)
            ids_all.append(ids)
            owners_all.append(owners)
            last = int(ids[-1])
        return (np.concatenate(ids_all) if ids_all else np.zeros(0, np.int64),
                np.concatenate(owners_all) if owners_all else np.zeros(0, np.int64))

    def _rebuild_faces(self, version) -> None:
        n = self.num_faces()
        sample = None
        if self._wants_training(n):
            k = min(n, 40 * self._nlist(n))   # FAISS wants >= 39 training points per cell
            # every (n // k)-th face: a spread over enrollment order, not the first k enrolled
            _, _, sample = self._rows("f.face_id % ? = 0", (max(1, n // k),), limit=k)
            if len(sample) < 39 * self._nlist(n):   # ids with gaps (deletions): take the first k
                _, _, sample = self._rows(limit=k)
        index, trained_at = self._new_index(n, sample)
        ids, owners = self._read_all(lambda i, o, v: index.add_with_ids(np.ascontiguousarray(v), i))
        self._index, self._trained_at, self._ids, self._owners, self._synced = index, trained_at, ids, owners, \
            version

    def _rebuild_people(self, version) -> None:
        partial_keys, partial_sums = [], []

        def accumulate(ids, owners, vectors):   # per chunk: a person's faces may span chunks
            k, s = self._sum_by_owner(owners, vectors)
            partial_keys.append(k)
            partial_sums.append(s)

        ids, owners = self._read_all(accumulate)
        keys, centroids = self._centroids(partial_keys, partial_sums)
        n = len(keys)
        sample = None
        if self._wants_training(n):
            k = min(n, 40 * self._nlist(n))
            sample = centroids[::max(1, n // k)][:k]
        index, trained_at = self._new_index(n, sample)
        if n:
            index.add_with_ids(np.ascontiguousarray(centroids), keys)
        self._index, self._trained_at, self._ids, self._owners, self._synced = index, trained_at, ids, owners, \
            version

    def sync(self) -> None:
        """Bring the index up to SQLite's state: faces with a face_id above the last one seen are new, faces seen
        before that SQLite no longer holds are gone; the index adds / removes those faces ('faces') or recomputes
        the centroid of every person they belong to ('people'). Cheap when nothing changed (one PRAGMA)."""
        with self._index_lock:
            version = self._version()
            if version == self._synced:
                return
            last = int(self._ids[-1]) if len(self._ids) else 0
            # a people index re-reads each changed person's faces below: the new ones need no embeddings here
            new_ids, new_owners, vectors = self._rows("f.face_id > ?", (last,),
                                                      with_vectors=self.indexed == "faces")
            ids, owners = np.concatenate([self._ids, new_ids]), np.concatenate([self._owners, new_owners])
            gone = np.zeros(0, np.int64)
            gone_owners = np.zeros(0, np.int64)
            if self.num_faces() != len(ids):   # some faces were deleted (or replaced)
                current = np.fromiter((r[0] for r in self._read("SELECT face_id FROM faces")), np.int64)
                lost = ~np.isin(ids, current, assume_unique=True)
                gone, gone_owners = ids[lost], owners[lost]
                ids, owners = ids[~lost], owners[~lost]
            if self.indexed == "faces":
                if self.kind == "hnsw" and len(gone):   # HNSW cannot delete
                    return self.rebuild()
                if len(new_ids):
                    self._index.add_with_ids(np.ascontiguousarray(vectors), new_ids)
                if len(gone):
                    self._index.remove_ids(gone)
            else:
                changed = np.unique(np.concatenate([new_owners, gone_owners]))
                if self.kind == "hnsw" and np.isin(changed, self._owners).any():   # a centroid moves: no delete
                    return self.rebuild()
                if len(changed):
                    self._index.remove_ids(changed)
                    keys, centroids = self._centroids_of(changed)
                    if len(keys):
                        self._index.add_with_ids(np.ascontiguousarray(centroids), keys)
            self._ids, self._owners = ids, owners
            n = int(self._index.ntotal)
            if self._wants_training(n) and n > 4 * max(self._trained_at, 1):   # cells trained on a quarter of
                return self.rebuild()                                          # today's vectors: retrain
            self._synced = version

    def index_size(self) -> int:
        """Vectors in the index: num_faces() ('faces') or the number of people ('people') after sync()."""
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
    def nearest(self, queries, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) queries -> (similarities (Q, k) float32 cosine, keys (Q, k) int64: face_ids ('faces') or people
        rowids ('people'); -1 where the index holds fewer)."""
        q = self._as_embeddings(queries)
        self.sync()
        with self._index_lock:
            if self._index.ntotal == 0:
                return np.full((len(q), k), np.nan, np.float32), np.full((len(q), k), -1, np.int64)
            return self._index.search(q, k)

    def search(self, queries, threshold: float | None = None, aggregation: str | None = None) -> list[Match]:
        """Best person for each query through the index when ``aggregation`` (default: the gallery's) is the one
        the index answers ('centroid' for 'people', 'max' for 'faces'); any other uses Gallery's exact search."""
        aggregation = self.aggregation if aggregation is None else aggregation
        if aggregation != self._answers:
            return super().search(queries, threshold, aggregation)
        threshold = self.threshold if threshold is None else float(threshold)
        sims, keys = self.nearest(queries, 1)
        wanted = sorted({int(i) for i in keys[:, 0] if i >= 0})
        owners = {}
        if wanted:
            marks = ",".join("?" * len(wanted))
            sql = (f"SELECT p.rowid, p.person_id, p.name FROM people p WHERE p.rowid IN ({marks})"
                   if self.indexed == "people" else
                   f"SELECT f.face_id, f.person_id, p.name FROM faces f JOIN people p USING (person_id) "
                   f"WHERE f.face_id IN ({marks})")
            owners = {r[0]: (r[1], r[2]) for r in self._read(sql, wanted)}
        out = []
        for s, i in zip(sims[:, 0], keys[:, 0]):
            if int(i) not in owners:  # empty gallery, or deleted after the search: nothing found
                out.append(Match(None, UNKNOWN, float("nan"), aggregation=aggregation))
                continue
            pid, name = owners[int(i)]
            accepted = float(s) > threshold
            out.append(Match(pid if accepted else None, name if accepted else UNKNOWN, float(s), pid, name,
                             aggregation))
        return out
