"""fr_lib.data.recordio against the byte format of dmlc-core's recordio.cc and mxnet's recordio.py."""
from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest

from fr_lib.data import recordio
from fr_lib.data.recordio import (IR_SIZE, MAGIC_BYTES, IndexedRecordReader, IndexedRecordWriter, IRHeader,
                                  RecordIOError, decode_lrec, encode_lrec, frame_record, pack_payload,
                                  parse_record, read_index, unpack_payload)


def dmlc_write_record(buf: bytes) -> bytes:
    """A line-by-line transcription of dmlc::RecordIOWriter::WriteRecord (byte loop), the reference."""
    magic = struct.pack("<I", 0xCED7230A)
    out = bytearray()
    n = len(buf)
    lower, upper = (n >> 2) << 2, ((n + 3) >> 2) << 2
    dptr = 0
    for i in range(0, lower, 4):
        if buf[i:i + 4] == magic:
            out += magic + struct.pack("<I", ((1 if dptr == 0 else 2) << 29) | (i - dptr)) + buf[dptr:i]
            dptr = i + 4
    out += magic + struct.pack("<I", ((3 if dptr != 0 else 0) << 29) | (n - dptr)) + buf[dptr:]
    out += b"\0" * (upper - n)
    return bytes(out)


def test_magic_and_lrec_bit_layout():
    assert MAGIC_BYTES == bytes([0x0A, 0x23, 0xD7, 0xCE])
    assert encode_lrec(3, 5) == (3 << 29) | 5 and decode_lrec((2 << 29) | 12345) == (2, 12345)
    assert decode_lrec(encode_lrec(1, (1 << 29) - 1)) == (1, (1 << 29) - 1)


def test_frame_of_a_short_payload_exact_bytes():
    assert frame_record(b"ab") == MAGIC_BYTES + struct.pack("<I", 2) + b"ab\0\0"
    assert frame_record(b"") == MAGIC_BYTES + struct.pack("<I", 0)
    assert frame_record(b"abcd") == MAGIC_BYTES + struct.pack("<I", 4) + b"abcd"


def test_frame_splits_on_aligned_magic_exact_bytes():
    # magic at 0 and at 8: parts "" (flag 1), "wxyz" (flag 2), "pq" (flag 3, padded)
    payload = MAGIC_BYTES + b"wxyz" + MAGIC_BYTES + b"pq"
    expected = (MAGIC_BYTES + struct.pack("<I", (1 << 29) | 0)
                + MAGIC_BYTES + struct.pack("<I", (2 << 29) | 4) + b"wxyz"
                + MAGIC_BYTES + struct.pack("<I", (3 << 29) | 2) + b"pq\0\0")
    assert frame_record(payload) == expected
    assert parse_record(expected) == (payload, len(expected))


def test_unaligned_magic_is_not_split():
    payload = b"x" + MAGIC_BYTES + b"yz"
    framed = frame_record(payload)
    assert decode_lrec(struct.unpack_from("<I", framed, 4)[0]) == (0, 7)
    assert parse_record(framed)[0] == payload


def test_frame_matches_dmlc_reference_on_random_payloads_with_magic():
    rng = np.random.default_rng(0)
    for n in range(0, 80):
        raw = bytearray(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        for pos in rng.integers(0, max(n - 3, 1), 3):   # magic at aligned and unaligned places
            if pos + 4 <= n:
                raw[pos:pos + 4] = MAGIC_BYTES
        raw = bytes(raw)
        assert frame_record(raw) == dmlc_write_record(raw), n
        assert parse_record(frame_record(raw)) == (raw, len(dmlc_write_record(raw)))


def test_a_magic_only_payload_and_trailing_magic():
    for payload in (MAGIC_BYTES, MAGIC_BYTES * 3, b"abcd" + MAGIC_BYTES):
        framed = frame_record(payload)
        assert framed == dmlc_write_record(payload)
        assert framed.count(MAGIC_BYTES) == payload.count(MAGIC_BYTES) + 1
        assert parse_record(framed)[0] == payload


def test_ir_header_struct_layout():
    p = pack_payload(IRHeader(0, 7.0, 42, 3), b"IMG")
    assert p == struct.pack("<IfQQ", 0, 7.0, 42, 3) + b"IMG" and IR_SIZE == 24
    h, img = unpack_payload(p)
    assert (h.flag, h.label, h.id, h.id2, img) == (0, 7.0, 42, 3, b"IMG")


def test_label_array_follows_the_header():
    p = pack_payload(IRHeader(0, [5, 9.5], 1, 0), b"JPG")
    # mxnet.recordio.pack: flag = label count, header label field 0, then float32 labels
    assert p == struct.pack("<IfQQ", 2, 0.0, 1, 0) + np.array([5, 9.5], "<f4").tobytes() + b"JPG"
    h, img = unpack_payload(p)
    assert h.flag == 2 and h.label.tolist() == [5.0, 9.5] and img == b"JPG"


def test_short_payload_is_an_error():
    with pytest.raises(RecordIOError, match="shorter than"):
        unpack_payload(b"\0" * 10)
    with pytest.raises(RecordIOError, match="announces 9 labels"):
        unpack_payload(struct.pack("<IfQQ", 9, 0.0, 0, 0) + b"\0" * 8)


def _write(path, payloads, keys=None):
    keys = list(range(len(payloads))) if keys is None else keys
    with IndexedRecordWriter(path) as w:
        offsets = [w.write(k, p) for k, p in zip(keys, payloads)]
    return offsets


def test_index_file_is_mxnet_text(tmp_path):
    offsets = _write(tmp_path / "a.rec", [b"x" * 5, b"yy", MAGIC_BYTES + b"z"])
    assert (tmp_path / "a.idx").read_text() == "".join(f"{k}\t{o}\n" for k, o in enumerate(offsets))
    assert offsets == [0, 8 + 8, 16 + 8 + 4]   # 5 bytes pad to 8; 2 to 4
    keys, offs = read_index(tmp_path / "a.idx")
    assert keys.tolist() == [0, 1, 2] and offs.tolist() == offsets


def test_round_trip_with_split_records_and_random_keys(tmp_path):
    rng = np.random.default_rng(1)
    payloads = []
    for n in rng.integers(0, 3000, 60):
        b = bytearray(rng.bytes(int(n)))
        for pos in range(0, len(b) - 4, 400):
            b[pos:pos + 4] = MAGIC_BYTES          # aligned: every one splits the record
        payloads.append(bytes(b))
    keys = rng.permutation(10_000)[:60].tolist()
    _write(tmp_path / "r.rec", payloads, keys)
    assert (tmp_path / "r.rec").read_bytes().count(MAGIC_BYTES) > 2 * len(payloads)   # parts really written
    reader = IndexedRecordReader(tmp_path / "r.rec")
    for k, p in zip(keys, payloads):
        assert reader.read(k) == p
    assert len(reader) == 60 and keys[0] in reader and 10_001 not in reader
    with pytest.raises(KeyError):
        reader.read(10_001)


def test_part_by_part_reading_of_large_extents(tmp_path, monkeypatch):
    payloads = [MAGIC_BYTES + b"abcdefgh" + MAGIC_BYTES + b"k", b"plain", b"q" * 8 + MAGIC_BYTES]
    _write(tmp_path / "r.rec", payloads)
    monkeypatch.setattr(recordio, "MAX_EXTENT_READ", 0)
    reader = IndexedRecordReader(tmp_path / "r.rec")
    assert [reader.read(k) for k in range(3)] == payloads


def test_reader_pickles_without_its_file_handle(tmp_path):
    _write(tmp_path / "r.rec", [b"one", b"two"])
    reader = IndexedRecordReader(tmp_path / "r.rec")
    assert reader.read(1) == b"two" and reader._fd is not None
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._fd is None and clone.read(0) == b"one"


def test_large_index_parses_exactly(tmp_path):
    n = 500_000
    offsets = np.arange(n, dtype=np.int64) * 7_000 + 3
    (tmp_path / "big.idx").write_text("".join(f"{k}\t{o}\n" for k, o in zip(range(n), offsets.tolist())))
    keys, offs = read_index(tmp_path / "big.idx")
    assert np.array_equal(keys, np.arange(n)) and np.array_equal(offs, offsets)


@pytest.mark.parametrize("text", ["0\t0\nx\t8\n", "0 0\n", "0\t0\t5\n", ""])
def test_bad_index_text(tmp_path, text):
    (tmp_path / "a.idx").write_text(text)
    with pytest.raises(RecordIOError, match="a.idx"):
        read_index(tmp_path / "a.idx")


def test_missing_index(tmp_path):
    _write(tmp_path / "r.rec", [b"x"])
    (tmp_path / "r.idx").unlink()
    with pytest.raises(FileNotFoundError, match=r"r\.idx not found"):
        IndexedRecordReader(tmp_path / "r.rec")


def test_index_pointing_past_the_end(tmp_path):
    _write(tmp_path / "r.rec", [b"x", b"y"])
    with open(tmp_path / "r.idx", "a") as f:
        f.write("7\t4096\n")
    with pytest.raises(RecordIOError, match="key 7 points to byte 4096, past the end"):
        IndexedRecordReader(tmp_path / "r.rec")


def test_truncated_rec_fails_at_open(tmp_path):
    _write(tmp_path / "r.rec", [b"x" * 100, b"y" * 100])
    data = (tmp_path / "r.rec").read_bytes()
    (tmp_path / "r.rec").write_bytes(data[:-10])   # the last record loses its tail
    with pytest.raises(RecordIOError, match="truncated"):
        IndexedRecordReader(tmp_path / "r.rec")


def test_wrong_magic(tmp_path):
    _write(tmp_path / "r.rec", [b"x" * 8, b"y" * 8])
    data = bytearray((tmp_path / "r.rec").read_bytes())
    data[0:4] = b"\0\0\0\0"
    (tmp_path / "r.rec").write_bytes(bytes(data))
    reader = IndexedRecordReader(tmp_path / "r.rec")    # the last record is fine
    with pytest.raises(RecordIOError, match="no RecordIO magic at byte 0"):
        reader.read(0)


def test_writer_leaves_nothing_on_error(tmp_path):
    with pytest.raises(ValueError, match="written twice"):
        with IndexedRecordWriter(tmp_path / "r.rec") as w:
            w.write(0, b"a")
            w.write(0, b"b")
    assert list(tmp_path.iterdir()) == []
