"""insightface ``.bin`` verification sets (lfw.bin, cfp_fp.bin, agedb_30.bin): read, write, decode.

    >>> images, issame = load_bin("data/casia-webface/lfw.bin")      # 2N encoded images, (N,) bool
    >>> rgb = decode_bin_images(images)                                # (2N, 112, 112, 3) uint8 RGB
    >>> write_bin("synth.bin", [jpeg_a, jpeg_b, ...], [True, ...])

The file is a pickle of ``(bins, issame_list)``: ``bins`` the 2N encoded images (JPEG/PNG bytes) in pair order
(pair k = images 2k and 2k + 1), ``issame_list`` N flags. insightface reads it with
``pickle.load(f, encoding='bytes')`` (the sets were written by Python 2, whose ``str`` arrives as bytes); some
re-packed copies hold the images as uint8 numpy arrays, and Python 3 ``bytes`` pickled with protocol 2 arrive as
``_codecs.encode(text, 'latin1')``.

A .bin comes from the internet, and a plain ``pickle.load`` runs whatever callable the file names. ``load_bin``
therefore uses a restricted unpickler: the only globals it resolves are numpy's array/dtype/scalar
reconstructors (only arrays without Python objects inside) and ``_codecs.encode`` with the latin-1 codec; any other
global (os.system, builtins.eval, ...) is refused before it is called, with an error naming the file.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np

from fr_lib.io import atomic_write

#: pickle protocol of write_bin: 4 stores bytes natively (no _codecs.encode) and reads on Python >= 3.4.
BIN_PICKLE_PROTOCOL = 4


class BinFormatError(ValueError):
    """A file that is not an insightface .bin verification set (or holds something a .bin never holds)."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: not an insightface .bin verification set: {reason}")
        self.path, self.reason = str(path), reason


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    # How protocol-2 pickles of Python 3 bytes rebuild them: _codecs.encode(str, 'latin1'). Other codecs are refused:
    # a .bin has no use for them.
    if not isinstance(text, str) or str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not a bytes literal")
    return text.encode("latin-1", errors)


def _plain_dtype(*args):
    d = np.dtype(*args)
    if d.hasobject:   # object arrays would unpickle arbitrary Python objects as their elements
        raise pickle.UnpicklingError("numpy object arrays are not allowed")
    return d


def _safe_reconstruct(cls, *args):
    if cls is not np.ndarray:
        raise pickle.UnpicklingError(f"array subclass {cls!r} is not allowed")
    return np.ndarray.__new__(np.ndarray, *args)


def _safe_scalar(dtype, *args):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("numpy object scalars are not allowed")
    from numpy._core.multiarray import scalar
    return scalar(dtype, *args)


def _safe_frombuffer(buf, dtype, shape, order):
    from numpy._core.numeric import _frombuffer
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("numpy object arrays are not allowed")
    return _frombuffer(buf, dtype, shape, order)


# (module, name) -> the callable the unpickler gets instead; numpy's module path changed in numpy 2 (core -> _core),
# and files written by either version name their own.
_ALLOWED = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = _safe_reconstruct
    _ALLOWED[(_mod, "scalar")] = _safe_scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_mod, "_frombuffer")] = _safe_frombuffer
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = _plain_dtype
_ALLOWED[("_codecs", "encode")] = _latin1_encode


class _BinUnpickler(pickle.Unpickler):
    """Resolves only the globals in _ALLOWED; everything else raises before anything from the file is called."""

    def find_class(self, module, name):
        fn = _ALLOWED.get((module, name))
        if fn is None:
            raise pickle.UnpicklingError(f"refused pickle global {module}.{name} (a .bin holds only bytes, "
                                         "flags and numpy uint8 arrays)")
        return fn

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused persistent id")


def _check_image(x, i: int, path):
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    if isinstance(x, str):   # a Python 2 str, decoded as latin-1 by the unpickler: its exact bytes again
        return x.encode("latin-1")
    if isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim in (1, 2, 3):
        return x
    raise BinFormatError(path, f"image {i} is a {type(x).__name__}"
                               f"{f' {x.dtype} {x.shape}' if isinstance(x, np.ndarray) else ''}, "
                               "expected encoded image bytes or a uint8 array")


def load_bin(path: str | os.PathLike) -> tuple[list, np.ndarray]:
    """Read an insightface .bin verification set without executing anything from the file.

    Returns (images, issame): images a list of 2N entries in pair order, each the encoded image as bytes (or a uint8
    numpy array: 1-D = encoded bytes, (H, W[, 3]) = pixels), issame (N,) bool.
    Raises FileNotFoundError, or BinFormatError (a ValueError naming the file) for foreign pickle content,
    truncated files and a wrong structure.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"verification set not found: {path}")
    try:
        with open(path, "rb") as f:
            # latin-1 (numpy's documented encoding for Python 2 pickles) rather than insightface's 'bytes': a
            # Python 2 str then arrives as a str that _check_image turns back into exactly the same bytes
            obj = _BinUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise BinFormatError(path, str(e)) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError,
            MemoryError, UnicodeDecodeError) as e:
        raise BinFormatError(path, f"unreadable pickle ({type(e).__name__}: {e})") from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(o, (tuple, list, np.ndarray))
                                                                     for o in obj)):
        raise BinFormatError(path, f"expected a pair (images, issame), found {type(obj).__name__}")
    bins, flags = obj
    if isinstance(bins, np.ndarray) and bins.ndim == 4:   # one (2N, H, W, C) array of pixels
        bins = list(bins)
    images = [_check_image(x, i, path) for i, x in enumerate(bins)]
    try:
        issame = np.asarray(flags)
    except (ValueError, TypeError) as e:
        raise BinFormatError(path, f"issame list is not a list of flags ({e})") from None
    if issame.ndim != 1 or not (issame.dtype == bool or np.issubdtype(issame.dtype, np.integer)):
        raise BinFormatError(path, f"issame must be N flags, got dtype {issame.dtype} shape {issame.shape}")
    if issame.dtype != bool and not np.isin(issame, (0, 1)).all():
        raise BinFormatError(path, "issame flags must be 0/1 or booleans")
    if len(images) != 2 * len(issame):
        raise BinFormatError(path, f"{len(images)} images for {len(issame)} pairs (expected 2 per pair)")
    if not len(issame):
        raise BinFormatError(path, "no pairs")
    return images, issame.astype(bool)


def write_bin(path: str | os.PathLike, images: Sequence[bytes], issame: Sequence[bool]):
    """Write a .bin verification set atomically: ``images`` the 2N encoded images (JPEG/PNG bytes) in pair order,
    ``issame`` N flags. Same structure as insightface's (pickle of (list of bytes, list of bool)); readable by
    insightface's ``pickle.load(f, encoding='bytes')`` and by load_bin. Returns the path."""
    images = list(images)
    flags = [bool(x) for x in issame]
    bad = [i for i, x in enumerate(images) if not isinstance(x, (bytes, bytearray))]
    if bad:
        raise ValueError(f"write_bin: images must be encoded bytes; entry {bad[0]} is {type(images[bad[0]]).__name__}")
    if len(images) != 2 * len(flags) or not flags:
        raise ValueError(f"write_bin: {len(images)} images for {len(flags)} pairs; need 2 images per pair, >= 1 pair")
    return atomic_write(path, pickle.dumps(([bytes(x) for x in images], flags), protocol=BIN_PICKLE_PROTOCOL))


def decode_image(data, name: str = "image") -> np.ndarray:
    """One .bin entry -> (H, W, 3) uint8 RGB. ``data``: encoded bytes or a 1-D uint8 array of them
    (fr_lib.data.images.decode_rgb), or pixels as a (H, W) / (H, W, 3) uint8 array (taken as RGB).
    Raises fr_lib.data.ImageLoadError(name, reason)."""
    from fr_lib.data.images import ImageLoadError, decode_rgb

    if isinstance(data, np.ndarray) and data.ndim >= 2:
        if data.ndim == 2:
            return np.repeat(data[:, :, None], 3, axis=2)
        if data.shape[2] == 3:
            return np.ascontiguousarray(data)
        raise ImageLoadError(name, f"pixel array of shape {data.shape}, expected (H, W) or (H, W, 3)")
    buf = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    return np.asarray(decode_rgb(buf, name), dtype=np.uint8)


def decode_bin_images(images: Sequence, name: str = ".bin", progress: bool = False) -> np.ndarray:
    """All entries of load_bin's ``images`` -> (2N, H, W, 3) uint8 RGB. Every image must have the same size (the
    published sets are 112 x 112); an undecodable one raises ImageLoadError naming ``name`` and its position."""
    from fr_lib.data.images import ImageLoadError

    it = images
    if progress:
        from fr_lib.progress import progress_bar
        it = progress_bar(images, desc=f"decode {os.path.basename(str(name))}", unit="img")
    out = None
    for i, data in enumerate(it):
        rgb = decode_image(data, name=f"{name}[{i}]")
        if out is None:
            out = np.empty((len(images), *rgb.shape), np.uint8)
        elif rgb.shape != out.shape[1:]:
            raise ImageLoadError(f"{name}[{i}]", f"size {rgb.shape[:2]} differs from the first image's "
                                                 f"{out.shape[1:3]}")
        out[i] = rgb
    if out is None:
        raise ValueError(f"{name}: no images")
    return out


def sample_pairs(labels: Sequence[int], n_pairs: int, n_folds: int = 10, seed: int = 0) -> list[tuple[int, int, bool]]:
    """``n_pairs`` (i, j, issame) image pairs over ``labels`` (one identity label per image), laid out like LFW's
    pairs.txt: ``n_folds`` contiguous folds, each half same-identity pairs then half different-identity pairs, so
    the contiguous 10-fold protocol sees balanced folds. Deterministic for a seed; no pair repeats while enough
    distinct pairs exist. Raises ValueError when no identity has two images or there is only one identity."""
    labels = np.asarray(labels)
    if n_pairs < n_folds or n_pairs % (2 * n_folds):
        raise ValueError(f"n_pairs must be a positive multiple of {2 * n_folds} (balanced folds), got {n_pairs}")
    by_id = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    multi = [c for c, idx in by_id.items() if len(idx) >= 2]
    if not multi or len(by_id) < 2:
        raise ValueError(f"same and different pairs need >= 1 identity with 2+ images and >= 2 identities; got "
                         f"{len(by_id)} identities, {len(multi)} with 2+ images")
    rng = np.random.default_rng(seed)
    ids = list(by_id)
    seen: set = set()

    def draw(same: bool):
        for _ in range(1000):      # rejection of repeats; falls back to a repeat when the pool is exhausted
            if same:
                i, j = rng.choice(by_id[multi[rng.integers(len(multi))]], 2, replace=False)
            else:
                a, b = rng.choice(len(ids), 2, replace=False)
                i, j = rng.choice(by_id[ids[a]]), rng.choice(by_id[ids[b]])
            key = (min(i, j), max(i, j))
            if key not in seen:
                break
        seen.add(key)
        return int(i), int(j), same

    per = n_pairs // n_folds
    return [draw(k < per // 2) for _ in range(n_folds) for k in range(per)]


def write_bin_from_folder(root: str | os.PathLike, path: str | os.PathLike, n_pairs: int = 600, seed: int = 0,
                          min_images_per_identity: int = 1):
    """A .bin verification set from an aligned identity folder ``root/<identity>/<image>`` (e.g. held-out
    identities, or ``fr data synth`` output): sample_pairs over its images, each image stored as its file's
    encoded bytes (no re-encoding). Returns the path."""
    from fr_lib.data.scan import scan_folder

    index = scan_folder(root, min_images_per_identity=min_images_per_identity)
    pairs = sample_pairs([lab for _, lab in index.samples], n_pairs, seed=seed)
    cache: dict[int, bytes] = {}

    def data(i: int) -> bytes:
        if i not in cache:
            cache[i] = (Path(index.root) / index.samples[i][0]).read_bytes()
        return cache[i]

    images = [data(k) for i, j, _ in pairs for k in (i, j)]
    return write_bin(path, images, [same for _, _, same in pairs])
