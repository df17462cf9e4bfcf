"""insightface / im2rec RecordIO face packs (``train.rec`` + ``train.idx`` [+ ``property``]) as a dataset root.

CASIA-WebFace as Kaggle and insightface ship it is such a pack of aligned 112 x 112 JPEGs. ``scan_folder`` hands a
root holding train.rec + train.idx to ``scan_pack``, which returns a PackIndex: a FolderIndex whose sample paths
are ``<identity>/<record key>.jpg`` and whose ``load`` reads the record, so FaceFolder, the splits, the P x K
sampler, the packed uint8 cache and the count filters work on a pack exactly as on a folder.

Layouts (the rules arcface_torch's MXFaceDataset follows):
- insightface: record 0 has ``flag > 0`` and no image; its label array is ``[a, b]``: images are records 1 .. a-1
  and records a .. b-1 are identity records whose label is the ``[start, end)`` key range of that identity's
  images. Only the b - a identity records are read to build the index; identity i (in record order) is named
  ``f"{i:05d}"``. (arcface_torch tests ``flag > 0`` only; an im2rec pack with label arrays would fool it.)
- im2rec: every record in the index is an image; its class is its label, or label[0] when the label is an array.
  The headers of all records are read once (vectorised over a memory map) to find the classes.
``property`` (``num_classes,height,width``) is read when present.

Image bytes are decoded when read, not at the scan: a record that does not decode is reported and replaced by
FaceFolder like a file that went bad after a folder scan (``load_errors``).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fr_lib.data.images import ImageLoadError, decode_rgb
from fr_lib.data.recordio import (IR_SIZE, LENGTH_MASK, MAGIC, IndexedRecordReader, IndexedRecordWriter, IRHeader,
                                  RecordIOError, pack_payload, unpack_payload)
from fr_lib.data.scan import FolderIndex, identity_filter
from fr_lib.io import atomic_write

REC, IDX, PROPERTY = "train.rec", "train.idx", "property"
KEY_DIGITS = 8   # sample file names: <identity>/<key zero-padded>.jpg, so name order == key order


def is_pack(root) -> bool:
    """True for a folder holding train.rec or train.idx (a pack; scan_pack says what is missing)."""
    root = Path(root)
    return (root / REC).is_file() or (root / IDX).is_file()


def read_property(root) -> tuple[int, int, int] | None:
    """(num_classes, height, width) from ``root/property``, or None when there is none."""
    path = Path(root) / PROPERTY
    if not path.is_file():
        return None
    text = path.read_text("utf-8", errors="replace").strip()
    try:
        num_classes, height, width = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{path}: expected 'num_classes,height,width', got {text[:60]!r}") from None
    return num_classes, height, width


def _key_of(rel: str) -> int:
    return int(rel[rel.rindex("/") + 1:].split(".", 1)[0])


def _sample_name(identity: str, key: int) -> str:
    return f"{identity}/{key:0{KEY_DIGITS}d}.jpg"


class PackImages:
    """Decoded images of a pack's records by sample path: ``PackImages(root).load("00012/00000345.jpg")``.
    Pickles without its file handle (each DataLoader worker or process opens its own)."""

    def __init__(self, root, reader: IndexedRecordReader | None = None):
        self.root = Path(root)
        if reader is None:
            rec, idx = self.root / REC, self.root / IDX
            if not rec.is_file():
                raise FileNotFoundError(f"{self.root} has {IDX} but no {REC}: a pack needs both files")
            if not idx.is_file():
                raise FileNotFoundError(f"{self.root} has {REC} but no {IDX}: copy the train.idx that came with the "
                                        f"pack beside it (every insightface / Kaggle pack ships one)")
            reader = IndexedRecordReader(rec, idx)
        self.reader = reader

    def read_bytes(self, key: int) -> bytes:
        """The encoded image of record ``key`` (ImageLoadError naming the record when it is not readable)."""
        where = f"{self.reader.rec_path}#{key}"
        try:
            return unpack_payload(self.reader.read(key))[1]
        except KeyError:
            raise ImageLoadError(where, f"record key {key} is not in {IDX}") from None
        except RecordIOError as e:
            raise ImageLoadError(where, f"bad record ({e})") from None
        except OSError as e:
            raise ImageLoadError(where, f"unreadable ({e.strerror or e})") from None

    def load(self, rel: str):
        """The RGB PIL image of sample ``rel`` (``<identity>/<key>.jpg``)."""
        key = _key_of(rel)
        return decode_rgb(self.read_bytes(key), f"{self.reader.rec_path}#{key}")

    def load_tensor(self, rel: str):
        """The same pixels as ``load`` as a uint8 (3, H, W) tensor. JPEGs are decoded by torchvision.io (libjpeg-turbo
        straight into a tensor, about twice PIL's rate here; pixel-identical to PIL for RGB and greyscale JPEGs);
        other formats, and JPEGs torchvision refuses, go through PIL (which also gives the error's reason)."""
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg
        from torchvision.transforms.v2.functional import pil_to_tensor

        key = _key_of(rel)
        data = self.read_bytes(key)
        if data[:3] == b"\xff\xd8\xff":
            try:
                return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB,
                                   apply_exif_orientation=True)
            except RuntimeError:
                pass
        return pil_to_tensor(decode_rgb(data, f"{self.reader.rec_path}#{key}"))


@dataclass
class PackIndex(FolderIndex):
    """A FolderIndex over a pack. ``layout``: 'insightface' or 'im2rec'; ``property``: (num_classes, height,
    width) from the property file, or None; ``images``: the record reader behind ``load``."""
    layout: str = "insightface"
    property: tuple[int, int, int] | None = None
    images: PackImages | None = None

    def load(self, rel: str):
        return self.images.load(rel)

    def load_tensor(self, rel: str):
        return self.images.load_tensor(rel)


def _label_ranges(reader: IndexedRecordReader, a: int, b: int, progress: bool) -> list[tuple[int, int]]:
    """The [start, end) image-key range in each identity record a .. b-1."""
    keys = np.arange(a, b)
    try:
        positions = reader.positions(keys)
    except KeyError as e:
        raise RecordIOError(f"{reader.idx_path}: identity record {e.args[0]} (of {a}..{b - 1}, announced by "
                            f"record 0) is not in the index") from None
    flags, labels = _header_labels(reader, positions, 2, progress)
    bad = np.flatnonzero(flags < 2)
    if bad.size:
        raise RecordIOError(f"{reader.rec_path}: identity record {a + int(bad[0])} has {int(flags[bad[0]])} "
                            f"label(s), expected the [start, end) range of its images")
    return [(int(s), int(e)) for s, e in labels.tolist()]


def _header_labels(reader: IndexedRecordReader, positions: np.ndarray, width: int,
                   progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """(flag (N,), labels (N, width)) of the records at index positions ``positions``: label[j] of the label array,
    or the scalar label in column 0 (NaN where a record has fewer labels). Vectorised over a memory map of the
    .rec: one gather of the first bytes of every record instead of N reads and N Python-level parses; records
    whose header is split by a magic word, short or damaged go through the full reader (which names the damage)."""
    n = len(positions)
    flags = np.zeros(n, np.int64)
    labels = np.full((n, width), np.nan)
    if n == 0:
        return flags, labels
    mm = np.memmap(reader.rec_path, dtype=np.uint8, mode="r")
    want = 8 + IR_SIZE + 4 * width   # record header, IRHeader, the first ``width`` floats of a label array
    cols = np.arange(want)
    step = 8192
    chunks = range(0, n, step)
    bar = None
    if progress and n > 2 * step:
        from fr_lib.progress import progress_bar
        bar = progress_bar(total=n, desc=f"scan {reader.rec_path.parent.name}", unit="record")
    for s in chunks:
        pos = positions[s:s + step]
        off = reader.offsets[pos]
        head = np.ascontiguousarray(mm[np.minimum(off[:, None] + cols, reader.size - 1)])   # clipped: see ``odd``
        magic, lrec, flag = (head[:, i:i + 4].copy().view("<u4")[:, 0].astype(np.int64) for i in (0, 4, 8))
        scalar = head[:, 12:16].copy().view("<f4")[:, 0]
        arr = head[:, 32:32 + 4 * width].copy().view("<f4").astype(np.float64)
        length, cflag = lrec & LENGTH_MASK, lrec >> 29
        got = np.minimum(flag, width)
        odd = (magic != MAGIC) | (cflag > 1) | (length < IR_SIZE + 4 * got) | (off + want > reader.size)
        arr[np.arange(width)[None, :] >= got[:, None]] = np.nan
        arr[flag == 0, 0] = scalar[flag == 0]
        flags[s:s + len(pos)], labels[s:s + len(pos)] = flag, arr
        for j in np.flatnonzero(odd).tolist():
            key = int(reader.keys[pos[j]])
            try:
                header = reader.read_header(key)
            except RecordIOError as e:
                raise RecordIOError(f"{reader.rec_path}: record {key}: {e}") from None
            lab = np.atleast_1d(np.asarray(header.label, np.float64))[:width]
            flags[s + j] = header.flag
            labels[s + j] = np.nan
            labels[s + j, :lab.size] = lab
        bar and bar.update(len(pos))
    bar and bar.close()
    return flags, labels


def _is_insightface_header(head: IRHeader | None, body: bytes | None) -> bool:
    """Record 0 of the insightface layout: a label array [a, b] of integers 1 <= a <= b and no image. (An im2rec
    pack with label arrays also has flag > 0 in record 0, but record 0 is an image there.)"""
    if head is None or head.flag < 2 or body:
        return False
    a, b = float(head.label[0]), float(head.label[1])
    return a.is_integer() and b.is_integer() and 1 <= a <= b


def _identity_names(n: int) -> list[str]:
    width = max(5, len(str(max(n - 1, 0))))
    return [f"{i:0{width}d}" for i in range(n)]


def scan_pack(root, min_images_per_identity: int = 1, max_images_per_identity: int | None = None,
              max_identities: int | None = None, progress: bool = False) -> PackIndex:
    """Index a pack like scan_folder indexes a folder (same filters, same result fields).

    Identities keep the pack's order (insightface: identity-record order; im2rec: ascending label) and get labels
    0..C-1 after the filters; within an identity images are in key order. Raises FileNotFoundError for a missing
    root, train.rec or train.idx, RecordIOError (a ValueError) for a damaged pack, ValueError when nothing usable
    remains.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist or is not a folder")
    images = PackImages(root)
    reader = images.reader
    prop = read_property(root)
    if len(reader) == 0:
        raise ValueError(f"{root / IDX} lists no records")
    skipped: list[tuple[str, str]] = []
    head0, body0 = unpack_payload(reader.read(0)) if 0 in reader else (None, None)
    if _is_insightface_header(head0, body0):
        layout = "insightface"
        a, b = int(head0.label[0]), int(head0.label[1])
        ranges = _label_ranges(reader, a, b, progress)
        names = _identity_names(len(ranges))
        present = np.zeros(max(a, 1), bool)
        k = reader.keys[(reader.keys > 0) & (reader.keys < a)]
        present[k] = True
        groups = []
        for name, (start, end) in zip(names, ranges):
            if not (1 <= start <= end <= a):
                raise RecordIOError(f"{reader.rec_path}: identity {name} has image range [{start}, {end}) outside "
                                    f"the image records 1..{a - 1}")
            keys = np.arange(start, end)
            missing = keys[~present[start:end]]
            skipped.extend((_sample_name(name, int(m)), f"record key not in {IDX}") for m in missing.tolist())
            groups.append((name, keys[present[start:end]]))
    else:
        layout = "im2rec"
        labels = _header_labels(reader, np.arange(len(reader)), 1, progress)[1][:, 0]
        ints = np.rint(labels).astype(np.int64)
        classes_found, inverse = np.unique(ints, return_inverse=True)
        names = [str(int(c)) if c < 0 else f"{int(c):05d}" for c in classes_found]
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(names) + 1))
        groups = []
        for i, name in enumerate(names):
            keys = reader.keys[order[bounds[i]:bounds[i + 1]]]
            groups.append((name, np.sort(keys)))
    samples, classes, excluded = [], [], []
    for name, keys in groups:
        if keys.size == 0:
            skipped.append((f"{name}/", "empty identity (no image records)"))
            continue
        why = identity_filter(int(keys.size), len(classes), min_images_per_identity, max_identities)
        if why:
            excluded.append((name, why))
            continue
        label = len(classes)
        classes.append(name)
        kept = keys[:max_images_per_identity].tolist()
        # _sample_name for all images of the identity in one %-format (494k names on CASIA)
        rels = ((f"{name}/%0{KEY_DIGITS}d.jpg\n" * len(kept)) % tuple(kept)).split("\n")
        rels.pop()
        samples.extend(zip(rels, [label] * len(kept)))
    if not samples:
        why = (f"{len(excluded)} identities below min_images_per_identity={min_images_per_identity}" if excluded
               else f"{len(groups)} identities, no image records")
        raise ValueError(f"no usable images in the pack {root} ({why})")
    return PackIndex(root, samples, classes, skipped, excluded, layout=layout, property=prop, images=images)


def verify_pack(index: PackIndex, workers: int | None = None, progress: bool = False) -> list[tuple[str, str]]:
    """Decode every image record of ``index`` once (JPEGs at 1/8 scale, in threads: PIL releases the GIL) and
    return (sample, reason) for each that does not decode: what a folder scan's ``verify`` reports as skipped."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    def check(rel: str):
        key = _key_of(rel)
        try:
            decode_rgb(index.images.read_bytes(key), rel, draft_size=(32, 32))
        except ImageLoadError as e:
            return rel, e.reason
        return None

    bar = None
    if progress:
        from fr_lib.progress import progress_bar
        bar = progress_bar(total=len(index), desc=f"verify {Path(index.root).name}", unit="img")
    failed = []
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        for res in pool.map(check, [rel for rel, _ in index.samples], chunksize=256):
            if res is not None:
                failed.append(res)
            bar and bar.update(1)
    bar and bar.close()
    return failed


def _image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an encoded image's header, None when PIL cannot tell."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def write_pack(index: FolderIndex, dst, progress: bool = True) -> dict:
    """Write ``index``'s images (a scanned folder, or another pack) as ``dst/train.rec``, ``train.idx`` and
    ``property`` in the insightface layout, readable by mxnet's MXIndexedRecordIO and arcface_torch.

    Records: 0 = header (label [n + 1, n + 1 + C]); 1..n = images in sample order, label = class (float), id =
    key; n + 1 .. n + C = one per identity, label = [start, end) of its keys. Image bytes are stored as they are in
    the files (JPEG stays JPEG: no re-encoding loss). ``property`` gets the most common size among the first and
    every 97th image (``sizes_differ`` when they are not all the same). Returns
    {'root', 'images', 'identities', 'size', 'sizes_differ'}.
    """
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    by_label: list[list[str]] = [[] for _ in index.classes]
    for rel, label in index.samples:
        by_label[label].append(rel)
    by_label = [g for g in by_label if g]
    n = sum(len(g) for g in by_label)
    source = index.images if isinstance(index, PackIndex) else None
    sizes = Counter()
    bar = None
    if progress:
        from fr_lib.progress import progress_bar
        bar = progress_bar(total=n, desc=f"pack {dst.name}", unit="img")
    with IndexedRecordWriter(dst / REC, dst / IDX) as w:
        w.write(0, pack_payload(IRHeader(0, [n + 1, n + 1 + len(by_label)])))
        key, ranges = 1, []
        for label, group in enumerate(by_label):
            start = key
            for rel in group:
                if source is not None:
                    data = source.read_bytes(_key_of(rel))
                else:
                    data = (Path(index.root) / rel).read_bytes()
                if key == 1 or key % 97 == 0:   # image sizes of a sample of the images, for property
                    size = _image_size(data)
                    if size is not None:
                        sizes[size] += 1
                w.write(key, pack_payload(IRHeader(0, float(label), key, 0), data))
                key += 1
                bar and bar.update(1)
            ranges.append((start, key))
        for label, (start, end) in enumerate(ranges):
            w.write(n + 1 + label, pack_payload(IRHeader(0, [start, end], n + 1 + label, 0)))
    bar and bar.close()
    width, height = sizes.most_common(1)[0][0] if sizes else (0, 0)
    size = (height, width)   # property's order
    atomic_write(dst / PROPERTY, f"{len(by_label)},{size[0]},{size[1]}\n")
    return {"root": dst, "images": n, "identities": len(by_label), "size": size, "sizes_differ": len(sizes) > 1}


def _extension(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:2] == b"BM":
        return ".bmp"
    return ".jpg"


def unpack_pack(index: PackIndex, dst, progress: bool = True) -> dict:
    """Write every image of a pack as ``dst/<identity>/<key>.<ext>`` (the stored bytes, no re-encoding). Files that
    already exist are kept (resumable). Unreadable records are counted and listed, not fatal.
    Returns {'root', 'written', 'kept', 'failed': [(sample, reason)]}."""
    dst = Path(dst)
    written = kept = 0
    failed = []
    made = set()
    items = index.samples
    if progress:
        from fr_lib.progress import progress_bar
        items = progress_bar(items, desc=f"unpack {Path(index.root).name}", unit="img")
    for rel, _ in items:
        identity = rel[:rel.rindex("/")]
        key = _key_of(rel)
        try:
            data = index.images.read_bytes(key)
        except ImageLoadError as e:
            failed.append((rel, e.reason))
            continue
        out = dst / identity / f"{key:0{KEY_DIGITS}d}{_extension(data)}"
        if identity not in made:
            out.parent.mkdir(parents=True, exist_ok=True)
            made.add(identity)
        if out.exists():
            kept += 1
            continue
        # no fsync per file: 494k fsyncs take longer than the rest; the rename still makes each file all-or-nothing
        atomic_write(out, data, fsync=False)
        written += 1
    return {"root": dst, "written": written, "kept": kept, "failed": failed}


def open_images(root):
    """``load(rel) -> RGB PIL image`` for samples of ``root``: a FolderIndex/PackIndex, a pack folder or a folder."""
    if isinstance(root, FolderIndex):
        return root.load
    root = Path(root)
    if is_pack(root):
        return PackImages(root).load
    from fr_lib.data.images import load_rgb

    return lambda rel: load_rgb(root / rel)


__all__ = ["PackImages", "PackIndex", "is_pack", "open_images", "read_property", "scan_pack", "unpack_pack",
           "verify_pack", "write_pack"]
