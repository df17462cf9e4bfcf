"""insightface .bin sets: round trip, the Python 2 / numpy variants, refusal of code-running pickles, decoding."""
from __future__ import annotations

import io
import os
import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from fr_lib.data.bin_sets import BinFormatError, decode_bin_images, decode_image, load_bin, write_bin
from fr_lib.data.images import ImageLoadError


def _encode(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def faces():
    """Four distinct 112 x 112 RGB crops of skimage's astronaut photo (a real face photo shipped with skimage)."""
    from skimage.data import astronaut
    a = astronaut()
    return [np.ascontiguousarray(a[y:y + 112, x:x + 112]) for y, x in ((30, 160), (60, 180), (200, 200), (300, 50))]


def test_write_then_load_round_trip_and_insightface_reader(faces, tmp_path):
    pngs = [_encode(f) for f in faces]
    path = write_bin(tmp_path / "s.bin", pngs, [True, False])
    images, issame = load_bin(path)
    assert images == pngs and issame.dtype == bool and issame.tolist() == [True, False]
    # insightface's own reader: pickle.load(f, encoding='bytes') -> (list of bytes, list of bool)
    with open(path, "rb") as f:
        bins, flags = pickle.load(f, encoding="bytes")
    assert bins == pngs and flags == [True, False]
    # PNG is lossless: decoding gives back the pixels exactly, in pair order
    assert np.array_equal(decode_bin_images(images), np.stack(faces))
    assert not [p for p in os.listdir(tmp_path) if p != "s.bin"]   # no temp file left beside it


def test_python2_pickle_of_str_images(faces, tmp_path):
    """A Python 2 pickle (protocol 2, images as str = BINSTRING opcodes), as the published lfw.bin was written."""
    pngs = [_encode(f) for f in faces[:2]]
    body = b"\x80\x02]q\x00("
    for p in pngs:
        body += b"T" + struct.pack("<i", len(p)) + p           # BINSTRING: a Python 2 str
    body += b"e]q\x01\x88a\x86q\x02."                          # APPENDS; [True]; TUPLE2; STOP
    (tmp_path / "py2.bin").write_bytes(body)
    images, issame = load_bin(tmp_path / "py2.bin")
    assert images == pngs and issame.tolist() == [True]


class _Py2Pickler(pickle._Pickler):
    """Writes what Python 2's pickle writes: bytes and (ASCII) str both as BINSTRING, no _codecs.encode."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("ascii")
        self.write(b"T" + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def test_python2_pickle_of_numpy_arrays(faces, tmp_path):
    """numpy arrays pickled by Python 2 (the dtype code and the array data as str, no _codecs.encode)."""
    buf = io.BytesIO()
    pixels, png = faces[0], np.frombuffer(_encode(faces[1]), np.uint8)
    _Py2Pickler(buf, protocol=2).dump(([pixels, png], np.array([True])))
    assert b"_codecs" not in buf.getvalue() and b"X" not in buf.getvalue()[:3]
    (tmp_path / "py2np.bin").write_bytes(buf.getvalue())
    images, issame = load_bin(tmp_path / "py2np.bin")
    assert np.array_equal(images[0], pixels) and np.array_equal(images[1], png) and issame.tolist() == [True]


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_uint8_images_and_numpy_flags(faces, tmp_path, protocol):
    """Re-packed copies: images as uint8 arrays (encoded bytes, or pixels) and issame as a numpy bool array; under
    protocol 2 the Python 3 bytes go through _codecs.encode(..., 'latin1')."""
    png = _encode(faces[0])
    entries = [np.frombuffer(png, np.uint8), png, faces[1], faces[2][:, :, 0]]
    (tmp_path / "np.bin").write_bytes(pickle.dumps((entries, np.array([False, True])), protocol=protocol))
    images, issame = load_bin(tmp_path / "np.bin")
    assert issame.tolist() == [False, True]
    rgb = decode_bin_images(images)
    assert np.array_equal(rgb[0], faces[0]) and np.array_equal(rgb[1], faces[0])
    assert np.array_equal(rgb[2], faces[1])
    assert np.array_equal(rgb[3], np.repeat(faces[2][:, :, :1], 3, axis=2))   # grey pixels -> 3 equal channels


class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Evals:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def test_pickle_that_would_run_a_command_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    for i, payload in enumerate([([_RunsCommand(marker), b"x"], [True]),       # inside the image list
                                 _RunsCommand(marker),                          # as the whole file
                                 ([b"a", b"b"], [_Evals()])]):                  # among the flags
        path = tmp_path / f"evil{i}.bin"
        path.write_bytes(pickle.dumps(payload, protocol=2))
        with pytest.raises(BinFormatError,
                           match=r"evil\d\.bin.*refused pickle global (posix|os|nt|builtins|__builtin__)\."):
            load_bin(path)
    assert not marker.exists()
    # and the plain pickle would have run it: the test's payload is live
    pickle.loads((tmp_path / "evil0.bin").read_bytes())
    assert marker.exists()


def test_other_foreign_content_is_refused(tmp_path):
    cases = {
        "objarr": pickle.dumps((np.array([b"a", b"b"], dtype=object), [True])),     # object array
        "codec": b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00xX\x04\x00\x00\x00zlibq\x01\x86R.",
        "dict": pickle.dumps({"images": [b"a", b"b"], "issame": [True]}),
        "count": pickle.dumps(([b"a", b"b", b"c"], [True])),
        "flags": pickle.dumps(([b"a", b"b"], ["yes"])),
        "intimg": pickle.dumps(([1, 2], [True])),
        "empty": pickle.dumps(([], [])),
    }
    for name, data in cases.items():
        (tmp_path / f"{name}.bin").write_bytes(data)
        with pytest.raises(BinFormatError, match=name):
            load_bin(tmp_path / f"{name}.bin")
    good = pickle.dumps(([b"a", b"b"], [True]), protocol=4)
    (tmp_path / "trunc.bin").write_bytes(good[:len(good) // 2])
    with pytest.raises(BinFormatError, match="trunc.bin.*(truncated|unreadable)"):
        load_bin(tmp_path / "trunc.bin")
    (tmp_path / "text.bin").write_text("hello")
    with pytest.raises(BinFormatError, match="text.bin"):
        load_bin(tmp_path / "text.bin")
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        load_bin(tmp_path / "missing.bin")


def test_write_bin_checks_its_input(tmp_path):
    with pytest.raises(ValueError, match="2 images per pair"):
        write_bin(tmp_path / "x.bin", [b"a"], [True])
    with pytest.raises(ValueError, match="encoded bytes"):
        write_bin(tmp_path / "x.bin", [b"a", np.zeros(3, np.uint8)], [True])
    assert not (tmp_path / "x.bin").exists()


def test_decode_jpeg_matches_pil_and_reports_bad_images(faces):
    jpg = _encode(faces[0], "JPEG")
    ref = np.asarray(Image.open(io.BytesIO(jpg)).convert("RGB"))
    assert np.array_equal(decode_image(jpg), ref)
    assert np.abs(ref.astype(int) - faces[0]).mean() < 8          # it is the same photo
    with pytest.raises(ImageLoadError, match=r"lfw.bin\[1\].*not a recognised image"):
        decode_bin_images([jpg, b"not an image"], name="lfw.bin")
    with pytest.raises(ImageLoadError, match="truncated|corrupt"):
        decode_image(jpg[: len(jpg) // 2])
    with pytest.raises(ImageLoadError, match=r"\[1\].*differs"):
        decode_bin_images([jpg, _encode(faces[0][:100, :100])], name="s.bin")


def test_sample_pairs_layout_like_lfw_pairs():
    from fr_lib.data.bin_sets import sample_pairs

    labels = np.repeat(np.arange(8), 5)
    pairs = sample_pairs(labels, 60, seed=3)
    assert pairs == sample_pairs(labels, 60, seed=3) and pairs != sample_pairs(labels, 60, seed=4)
    assert len(pairs) == 60 and len({(min(i, j), max(i, j)) for i, j, _ in pairs}) == 60   # no repeated pair
    for k, (i, j, same) in enumerate(pairs):
        assert i != j and same == (labels[i] == labels[j]) and same == (k % 6 < 3)   # per fold: 3 same, 3 different
    with pytest.raises(ValueError, match="multiple of 20"):
        sample_pairs(labels, 30)
    with pytest.raises(ValueError, match="2\\+ images"):
        sample_pairs(np.arange(10), 20)


def test_write_bin_from_folder_keeps_the_files_bytes(synth_root, tmp_path):
    from fr_lib.data.bin_sets import write_bin_from_folder
    from fr_lib.data.scan import scan_folder

    path = write_bin_from_folder(synth_root, tmp_path / "synth.bin", n_pairs=40, seed=0)
    images, issame = load_bin(path)
    index = scan_folder(synth_root)
    by_bytes = {(synth_root / p).read_bytes(): lab for p, lab in index.samples}
    labels = [by_bytes[b] for b in images]                      # every image is one of the files, unchanged
    assert issame.tolist() == [labels[2 * k] == labels[2 * k + 1] for k in range(40)]
    assert issame.sum() == 20
    assert decode_bin_images(images).shape == (80, 112, 112, 3)
