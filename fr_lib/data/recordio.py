"""MXNet RecordIO (``.rec`` + ``.idx``) read and written in pure Python/numpy, byte-compatible with mxnet.

Hand-written because the only other implementation is mxnet itself, which no longer installs beside numpy >= 1.24.
The facts of the format this module relies on (dmlc-core src/recordio.cc, mxnet python/mxnet/recordio.py):

- A record on disk is: uint32 magic 0xced7230a, uint32 ``lrec``, ``length`` payload bytes, zero padding up to a
  multiple of 4 bytes; all integers little-endian. ``cflag = lrec >> 29``, ``length = lrec & (2**29 - 1)``; a
  payload is limited to < 2**29 bytes.
- dmlc's writer scans the payload at offsets 0, 4, 8, ... (below ``length`` rounded down to 4) for the 4 magic
  bytes. Each hit ends a part: the bytes since the previous cut are written as a part with cflag 1 (first) or 2
  (middle), and the 4 magic bytes themselves are dropped. The last part has cflag 3, or 0 when there was no cut.
  Only the last part is padded (the earlier parts have lengths that are multiples of 4 by construction). A reader
  joins the parts, putting the magic back between them.
- mxnet's ``recordio.pack``: payload = struct ``'IfQQ'`` (24 bytes, native = little-endian on x86/ARM, no padding:
  flag uint32, label float32, id uint64, id2 uint64), then, when ``flag > 0``, ``flag`` float32 labels (the label
  array; the header's own label field is then 0), then the image bytes.
- ``MXIndexedRecordIO`` writes the index as text lines ``'%s\\t%d\\n' % (key, byte offset of the record's first
  part)``, the offset being the .rec position before the record was written; keys are ints by default.
"""
from __future__ import annotations

import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fr_lib.io import atomic_path

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
LENGTH_MASK = (1 << 29) - 1
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)  # 24
MAX_EXTENT_READ = 1 << 24   # one pread per record up to 16 MiB; larger extents are read part by part


class RecordIOError(ValueError):
    """A .rec/.idx pair that does not follow the format (wrong magic, truncated, an index past the end)."""


@dataclass(frozen=True)
class IRHeader:
    """mxnet's image-record header. ``label``: a float, or a float32 array when ``flag > 0`` (then flag == its
    length). ``id``/``id2``: free uint64 fields (insightface and im2rec store the record key in ``id``)."""
    flag: int
    label: float | np.ndarray
    id: int = 0
    id2: int = 0


def encode_lrec(cflag: int, length: int) -> int:
    return (cflag << 29) | length


def decode_lrec(lrec: int) -> tuple[int, int]:
    """(cflag, length) of an ``lrec`` word."""
    return lrec >> 29, lrec & LENGTH_MASK


def frame_record(payload: bytes) -> bytes:
    """The bytes dmlc's RecordIOWriter::WriteRecord writes for ``payload`` (split on aligned magic, padded)."""
    n = len(payload)
    if n >= 1 << 29:
        raise ValueError(f"RecordIO records must be < 2**29 bytes, got {n}")
    lower = n & ~3
    # aligned magic positions, vectorised (the C++ writer checks every 4th offset byte by byte); the substring
    # test first skips numpy for the usual payload without the magic anywhere
    hits = (np.flatnonzero(np.frombuffer(payload, dtype="<u4", count=lower // 4) == MAGIC) * 4
            if MAGIC_BYTES in payload else ())
    out, start = [], 0
    for i in list(hits):
        out += [MAGIC_BYTES, struct.pack("<I", encode_lrec(1 if start == 0 else 2, i - start)), payload[start:i]]
        start = i + 4
    out += [MAGIC_BYTES, struct.pack("<I", encode_lrec(3 if start else 0, n - start)), payload[start:],
            b"\0" * (-n % 4)]
    return b"".join(out)


def _parse_part(buf, pos: int, where: str) -> tuple[int, bytes, int]:
    """(cflag, part bytes, position of the next part) of the part starting at ``buf[pos]``."""
    if pos + 8 > len(buf):
        raise RecordIOError(f"{where}: truncated (record header at byte {pos} runs past the end)")
    magic, lrec = struct.unpack_from("<II", buf, pos)
    if magic != MAGIC:
        raise RecordIOError(f"{where}: no RecordIO magic at byte {pos} (found 0x{magic:08x}, expected "
                            f"0x{MAGIC:08x}): not a RecordIO file, or the .idx does not belong to this .rec")
    cflag, length = decode_lrec(lrec)
    if cflag > 3:   # lrec >> 29 has 3 bits; dmlc only writes 0..3
        raise RecordIOError(f"{where}: invalid continuation flag {cflag} at byte {pos}")
    if pos + 8 + length > len(buf):
        raise RecordIOError(f"{where}: truncated (a {length}-byte part at byte {pos} runs past the end)")
    return cflag, bytes(buf[pos + 8:pos + 8 + length]), pos + 8 + ((length + 3) & ~3)


def parse_record(buf, offset: int = 0, where: str = "record") -> tuple[bytes, int]:
    """Join the record starting at ``buf[offset]``: (payload, offset just past it). Raises RecordIOError naming
    ``where`` for a wrong magic or a record that runs past the end of ``buf``."""
    parts, pos = [], offset
    while True:
        cflag, part, pos = _parse_part(buf, pos, where)
        parts.append(part)
        if cflag in (0, 3):
            return MAGIC_BYTES.join(parts), pos


def pack_payload(header: IRHeader, image: bytes = b"") -> bytes:
    """mxnet.recordio.pack: IRHeader (+ the float32 label array when the label is not a number) + image bytes."""
    if np.ndim(header.label) == 0:
        return struct.pack(IR_FORMAT, 0, float(header.label), header.id, header.id2) + image
    labels = np.asarray(header.label, dtype="<f4").ravel()
    return struct.pack(IR_FORMAT, labels.size, 0.0, header.id, header.id2) + labels.tobytes() + image


def unpack_payload(payload: bytes) -> tuple[IRHeader, bytes]:
    """mxnet.recordio.unpack: (header, image bytes). A label array (flag > 0) replaces the header's label."""
    if len(payload) < IR_SIZE:
        raise RecordIOError(f"record payload of {len(payload)} bytes is shorter than the {IR_SIZE}-byte IRHeader")
    flag, label, id_, id2 = struct.unpack_from(IR_FORMAT, payload)
    if flag > 0:
        if IR_SIZE + 4 * flag > len(payload):
            raise RecordIOError(f"IRHeader announces {flag} labels but the record has {len(payload)} bytes")
        label = np.frombuffer(payload, dtype="<f4", count=flag, offset=IR_SIZE).copy()
        return IRHeader(flag, label, id_, id2), payload[IR_SIZE + 4 * flag:]
    return IRHeader(flag, label, id_, id2), payload[IR_SIZE:]


def read_index(idx_path) -> tuple[np.ndarray, np.ndarray]:
    """(keys int64 (N,), byte offsets int64 (N,)) of a ``key<TAB>offset`` .idx file, in file order.

    numpy's C text parser reads all numbers at once (500k lines in ~0.1 s); a Python loop over lines, or np.loadtxt,
    takes seconds. Raises FileNotFoundError / RecordIOError with the file name."""
    idx_path = Path(idx_path)
    raw = idx_path.read_bytes()
    n_lines = raw.count(b"\n") + (0 if raw.endswith(b"\n") or not raw else 1)
    if not raw.strip():
        raise RecordIOError(f"{idx_path} is empty: an index needs one 'key<TAB>offset' line per record")
    import warnings

    try:
        with warnings.catch_warnings():   # numpy < 2 warns and stops at the first token that is not an integer
            warnings.simplefilter("ignore", DeprecationWarning)
            values = np.fromstring(raw, dtype=np.int64, sep=" ")   # any whitespace separates
    except ValueError:                    # numpy >= 2 raises there
        values = np.empty(0, np.int64)
    if values.size != 2 * n_lines or raw.count(b"\t") != n_lines:
        raise RecordIOError(f"{idx_path}: not an MXNet index (expected {n_lines} lines of 'integer key<TAB>integer "
                            f"byte offset', parsed {values.size} integers)")
    pairs = values.reshape(-1, 2)
    return pairs[:, 0].copy(), pairs[:, 1].copy()


class IndexedRecordReader:
    """Random access to the records of a ``.rec`` through its ``.idx``: ``reader.read(key) -> payload bytes``.

    Each record is one ``os.pread`` of its extent (from its offset to the next record's offset in file order), so
    readers in threads never share a file position. The file is opened lazily in each process: the reader pickles
    into DataLoader workers without its handle. ``keys`` are in .idx order.
    """

    def __init__(self, rec_path, idx_path=None):
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(".idx")
        if not self.rec_path.is_file():
            raise FileNotFoundError(f"{self.rec_path} not found")
        if not self.idx_path.is_file():
            raise FileNotFoundError(f"{self.idx_path} not found: a .rec is read through its .idx (written beside it "
                                    f"by MXIndexedRecordIO, im2rec or `fr data pack`)")
        self.keys, offsets = read_index(self.idx_path)
        self.size = self.rec_path.stat().st_size
        bad = np.flatnonzero((offsets < 0) | (offsets + 8 > self.size))
        if bad.size:
            i = int(bad[0])
            raise RecordIOError(f"{self.idx_path}: key {self.keys[i]} points to byte {offsets[i]}, past the end of "
                                f"{self.rec_path.name} ({self.size} bytes): the .rec is truncated or the .idx "
                                f"belongs to another file ({bad.size} such entries)")
        # extent of each record: up to the next distinct offset in file order (the last one: up to the end)
        distinct = np.sort(offsets)
        distinct = distinct[np.r_[True, distinct[1:] != distinct[:-1]]]   # np.unique, without its hashing pass
        ends = np.append(distinct[1:], self.size)[np.searchsorted(distinct, offsets)]
        self.offsets, self.ends = offsets, ends
        dense = self.keys.size and self.keys.min() >= 0 and self.keys.max() < 4 * self.keys.size + 1024
        if dense:   # the usual 0..N-1 keys: an array lookup instead of a dict of 500k ints
            self._pos = np.full(int(self.keys.max()) + 1, -1, dtype=np.int64)
            self._pos[self.keys] = np.arange(self.keys.size)
            self._dict = None
        else:
            self._pos, self._dict = None, {int(k): i for i, k in enumerate(self.keys.tolist())}
        self._fd = None
        self._pid = None
        self._lock = threading.Lock()
        if self.keys.size:   # the record that ends the file: a cut-off download fails here, not mid-epoch
            last = int(np.argmax(offsets))
            try:
                self.read(int(self.keys[last]))
            except RecordIOError as e:
                raise RecordIOError(f"{self.rec_path} is damaged or truncated (incomplete download?): {e}") from None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fd"] = state["_pid"] = state["_lock"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(self.keys.size)

    def __contains__(self, key) -> bool:
        try:
            self._position(key)
            return True
        except KeyError:
            return False

    def _position(self, key) -> int:
        key = int(key)
        if self._dict is not None:
            return self._dict[key]
        if 0 <= key < self._pos.size and self._pos[key] >= 0:
            return int(self._pos[key])
        raise KeyError(key)

    def positions(self, keys) -> np.ndarray:
        """Index positions (into ``keys`` / ``offsets``) of many keys at once; KeyError(first missing key)."""
        keys = np.asarray(keys, dtype=np.int64)
        if self._dict is not None:
            return np.array([self._position(k) for k in keys.tolist()], dtype=np.int64)
        inside = (keys >= 0) & (keys < self._pos.size)
        pos = np.full(keys.shape, -1, np.int64)
        pos[inside] = self._pos[keys[inside]]
        missing = np.flatnonzero(pos < 0)
        if missing.size:
            raise KeyError(int(keys[missing[0]]))
        return pos

    def _handle(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            with self._lock:
                if self._fd is None or self._pid != os.getpid():
                    self._fd, self._pid = os.open(self.rec_path, os.O_RDONLY), os.getpid()
        return self._fd

    def read_at(self, offset: int, size: int) -> bytes:
        return os.pread(self._handle(), size, offset)

    def read(self, key) -> bytes:
        """The joined payload of record ``key``. KeyError for a key not in the index; RecordIOError when the bytes
        at its offset are not a complete record."""
        i = self._position(key)
        start, extent = int(self.offsets[i]), int(self.ends[i] - self.offsets[i])
        where = f"{self.rec_path.name} key {int(key)} (byte {start})"
        if extent <= MAX_EXTENT_READ:
            return parse_record(self.read_at(start, extent), 0, where=where)[0]
        # a sparse index (a subset of the records) can leave a huge extent: read the parts one by one instead
        parts, pos = [], start
        while True:
            head = self.read_at(pos, 8)
            length = decode_lrec(struct.unpack_from("<I", head, 4)[0])[1] if len(head) == 8 else 0
            cflag, part, _ = _parse_part(head + self.read_at(pos + 8, (length + 3) & ~3), 0, where)
            parts.append(part)
            pos += 8 + ((length + 3) & ~3)
            if cflag in (0, 3):
                return MAGIC_BYTES.join(parts)

    def read_header(self, key) -> IRHeader:
        return unpack_payload(self.read(key))[0]

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __del__(self):
        try:
            self.close()
        except Exception:   # interpreter shutdown
            pass


class IndexedRecordWriter:
    """Write ``.rec`` + ``.idx`` exactly as mxnet's MXIndexedRecordIO(idx, rec, 'w') does::

        with IndexedRecordWriter("out/train.rec") as w:
            w.write(0, pack_payload(IRHeader(0, 3.0, 0, 0), jpeg_bytes))

    Both files are written to temp files and replace their destinations only on success (fr_lib.io.atomic_path).
    """

    def __init__(self, rec_path, idx_path=None):
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(".idx")
        self._keys: set[int] = set()

    def __enter__(self):
        self._rec_ctx, self._idx_ctx = atomic_path(self.rec_path), atomic_path(self.idx_path)
        self._rec = open(self._rec_ctx.__enter__(), "wb")
        self._idx = open(self._idx_ctx.__enter__(), "w", encoding="ascii", newline="\n")
        return self

    def write(self, key: int, payload: bytes) -> int:
        """Append one record under ``key``; returns its byte offset."""
        key = int(key)
        if key in self._keys:
            raise ValueError(f"key {key} written twice")
        self._keys.add(key)
        pos = self._rec.tell()
        self._rec.write(frame_record(payload))
        self._idx.write(f"{key}\t{pos}\n")
        return pos

    def __exit__(self, exc_type, exc, tb):
        self._rec.close()
        self._idx.close()
        info = (exc_type, exc, tb)
        try:
            self._rec_ctx.__exit__(*info)
        finally:
            self._idx_ctx.__exit__(*info)
        return False
