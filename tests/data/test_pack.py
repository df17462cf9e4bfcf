"""RecordIO face packs as dataset roots: both layouts, the FolderIndex interface, loaders, training data, CLI."""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass, replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fr_lib.cli import main
from fr_lib.data import FaceFolder, PackedFaces, PackIndex, build_batch_sampler, pack_folder, scan_folder
from fr_lib.data.pack import scan_pack, unpack_pack, write_pack
from fr_lib.data.recordio import MAGIC, MAGIC_BYTES, IndexedRecordReader, IndexedRecordWriter, IRHeader, pack_payload


@pytest.fixture(scope="module")
def pack_root(synth_root, tmp_path_factory):
    dst = tmp_path_factory.mktemp("pack") / "synth-pack"
    write_pack(scan_folder(synth_root, use_cache=False), dst, progress=False)
    return dst


def _pixels(img) -> np.ndarray:
    return np.asarray(img, dtype=np.uint8)


def _jpeg(seed: int, size: int = 24) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_insightface_layout_records(pack_root, synth_root):
    """What arcface_torch's MXFaceDataset reads: record 0's label [n+1, n+1+C], identity records [start, end)."""
    r = IndexedRecordReader(pack_root / "train.rec")
    h0 = r.read_header(0)
    assert h0.flag == 2 and h0.label.tolist() == [161, 177]          # 16 identities x 10 images
    for c in range(16):
        assert r.read_header(161 + c).label.tolist() == [1 + 10 * c, 11 + 10 * c]
    h5 = r.read_header(5)
    assert h5.flag == 0 and h5.label == 0.0 and h5.id == 5
    first = sorted((synth_root / "id_00000").iterdir())[0]
    assert r.read(1)[24:] == first.read_bytes()                      # stored as they are, no re-encoding
    assert (pack_root / "property").read_text().strip() == "16,112,112"


def test_pack_index_has_the_folder_interface(pack_root, synth_root):
    folder, pack = scan_folder(synth_root), scan_folder(pack_root)
    assert isinstance(pack, PackIndex) and pack.layout == "insightface" and pack.property == (16, 112, 112)
    assert pack.num_classes == folder.num_classes == 16 and len(pack) == len(folder) == 160
    assert pack.counts() == folder.counts() and pack.targets == folder.targets and pack.skipped == []
    assert pack.samples[0] == ("00000/00000001.jpg", 0) and pack.classes[:2] == ["00000", "00001"]
    a, b = FaceFolder(folder), FaceFolder(pack)
    for i in (0, 37, 159):
        assert a[i][1] == b[i][1] and np.array_equal(_pixels(a[i][0]), _pixels(b[i][0]))


def test_filters_work_on_packs(tmp_path):
    rows = [(c, n) for c, n in enumerate([2, 6, 4, 8])]
    with IndexedRecordWriter(tmp_path / "p" / "train.rec") as w:
        n, key, ranges = sum(k for _, k in rows), 1, []
        w.write(0, pack_payload(IRHeader(0, [n + 1, n + 1 + len(rows)])))
        for c, k in rows:
            ranges.append((key, key + k))
            for _ in range(k):
                w.write(key, pack_payload(IRHeader(0, float(c), key, 0), _jpeg(key)))
                key += 1
        for c, (s, e) in enumerate(ranges):
            w.write(n + 1 + c, pack_payload(IRHeader(0, [s, e])))
    idx = scan_pack(tmp_path / "p", min_images_per_identity=4, max_images_per_identity=5, max_identities=2)
    assert idx.classes == ["00001", "00002"] and idx.counts() == [5, 4]
    assert [name for name, _ in idx.excluded_identities] == ["00000", "00003"]
    assert idx.samples[0] == ("00001/00000003.jpg", 0)   # identity 1's images are keys 3..8
    assert idx.property is None
    with pytest.raises(ValueError, match="no usable images in the pack"):
        scan_pack(tmp_path / "p", min_images_per_identity=50)


def _im2rec_pack(root, with_array_labels: bool):
    """An im2rec-style pack: every record an image, shuffled keys, labels 3 / 7 / 12 (or [label, extra])."""
    labels = {10: 7, 11: 3, 2: 12, 5: 7, 8: 3, 0: 12, 30: 7}
    images = {k: _jpeg(100 + k) for k in labels}
    with IndexedRecordWriter(root / "train.rec") as w:
        for k, lab in labels.items():
            label = [lab, 0.25] if with_array_labels else float(lab)
            # key 5's id field holds the magic at payload offset 8: its first part is split inside the header
            rid = MAGIC if k == 5 else k
            w.write(k, pack_payload(IRHeader(0, label, rid, 0), images[k]))
    return labels, images


@pytest.mark.parametrize("with_array_labels", [False, True])
def test_im2rec_layout(tmp_path, with_array_labels):
    labels, images = _im2rec_pack(tmp_path, with_array_labels)
    raw = (tmp_path / "train.rec").read_bytes()
    assert raw.count(MAGIC_BYTES) > len(labels)                      # record 5 really is multi-part
    idx = scan_folder(tmp_path)
    assert idx.layout == "im2rec" and idx.classes == ["00003", "00007", "00012"]
    expected = sorted((lab, k) for k, lab in labels.items())
    assert [(idx.classes[lab], int(rel.split("/")[1][:-4])) for rel, lab in idx.samples] == \
        [(f"{lab:05d}", k) for lab, k in expected]
    ds = FaceFolder(idx)
    for i, (rel, _) in enumerate(idx.samples):
        key = int(rel.split("/")[1][:-4])
        assert np.array_equal(_pixels(ds[i][0]), _pixels(Image.open(io.BytesIO(images[key])).convert("RGB")))


def test_payload_with_aligned_magic_reads_back_identical(tmp_path, synth_root):
    """A JPEG carrying the magic at 4-byte-aligned payload offsets (bytes after EOI, which decoders ignore)."""
    src = tmp_path / "src" / "a"
    src.mkdir(parents=True)
    jpg = (synth_root / "id_00001" / "0000.jpg").read_bytes()
    pad = (-(24 + len(jpg))) % 4                                       # payload = 24-byte IRHeader + file
    (src / "0.jpg").write_bytes(jpg + b"\0" * pad + MAGIC_BYTES + b"tail" + MAGIC_BYTES)
    (src / "1.jpg").write_bytes(jpg)
    write_pack(scan_folder(tmp_path / "src", use_cache=False), tmp_path / "p", progress=False)
    assert (tmp_path / "p" / "train.rec").read_bytes().count(MAGIC_BYTES) == 4 + 2   # 4 records, 2 extra parts
    ds = FaceFolder(scan_folder(tmp_path / "p"))
    assert ds.index.images.read_bytes(1) == (src / "0.jpg").read_bytes()
    assert np.array_equal(_pixels(ds[0][0]), _pixels(ds[1][0]))


def test_bad_record_is_reported_and_replaced_like_a_bad_file(tmp_path):
    with IndexedRecordWriter(tmp_path / "train.rec") as w:
        for k in range(3):
            w.write(k, pack_payload(IRHeader(0, 1.0, k, 0), b"not a jpeg" if k == 1 else _jpeg(k)))
    ds = FaceFolder(scan_folder(tmp_path))
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        img, label = ds[1]
    assert label == 0 and np.array_equal(_pixels(img), _pixels(ds[2][0]))
    assert ds.load_errors == [("00001/00000001.jpg", "not a recognised image format")]


def test_packed_cache_from_a_pack(pack_root, synth_root, tmp_path):
    pack = scan_folder(pack_root)
    out = pack_folder(pack.samples[:20], pack_root, tmp_path / "c.npy", 112, classes=pack.classes, progress=False)
    cached = PackedFaces(out)
    folder = FaceFolder(scan_folder(synth_root))
    assert len(cached) == 20 and not cached.failed
    assert np.array_equal(cached[13][0].permute(1, 2, 0).numpy(), _pixels(folder[13][0]))


def test_dataloader_with_two_workers(pack_root):
    pack = scan_folder(pack_root)
    ds = FaceFolder(pack, transform=lambda im: torch.from_numpy(_pixels(im).copy()))
    ds.index.images.load(pack.samples[0][0])                         # a handle open in the parent
    batches = list(DataLoader(ds, batch_size=16, num_workers=2, shuffle=False))
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.shape == (160, 112, 112, 3) and y.tolist() == pack.targets
    assert torch.equal(x[77], ds[77][0])


@dataclass(frozen=True)
class _DataCfg:
    root: str
    image_size: int = 112
    min_images_per_identity: int = 1
    max_identities: int | None = None
    max_images_per_identity: int | None = None
    eval_identity_fraction: float = 0.25
    distractor_fraction: float = 0.5
    val_fraction: float = 0.2
    batch_size: int = 8
    samples_per_class: int = 4
    num_workers: int = 0
    packed_cache: bool = False
    cache_dir: str | None = None
    augment: bool = False
    batch_augment: bool = False
    seed: int = 0


@pytest.mark.parametrize("packed_cache", [False, True])
def test_training_data_from_a_pack(pack_root, synth_root, tmp_path, packed_cache):
    from fr_lib.training.data import build_training_data

    cfg = _DataCfg(root=str(pack_root), packed_cache=packed_cache, cache_dir=str(tmp_path))
    data = build_training_data(cfg, "imagenet")
    ref = build_training_data(replace(cfg, root=str(synth_root)), "imagenet")
    assert data.num_classes == ref.num_classes == 12 and len(data.train) == len(ref.train)
    assert data.n_query == ref.n_query and len(data.open_set) == len(ref.open_set)
    assert data.train.targets == ref.train.targets
    assert torch.equal(data.val[3][0], ref.val[3][0])
    sampler = build_batch_sampler(data.train.targets, cfg.batch_size, cfg.samples_per_class, seed=0)
    batch = next(iter(sampler))
    labels = [data.train.targets[i] for i in batch]
    assert len(set(labels)) == 2 and all(labels.count(c) == 4 for c in set(labels))   # P x K = 2 x 4


def test_unpack_then_pack_is_byte_identical(pack_root, tmp_path):
    r = unpack_pack(scan_folder(pack_root), tmp_path / "u", progress=False)
    assert r["written"] == 160 and not r["failed"]
    assert sorted(p.name for p in (tmp_path / "u" / "00003").iterdir())[0] == "00000031.jpg"
    again = unpack_pack(scan_folder(pack_root), tmp_path / "u", progress=False)
    assert again["written"] == 0 and again["kept"] == 160                      # resumable
    write_pack(scan_folder(tmp_path / "u", use_cache=False), tmp_path / "p2", progress=False)
    for name in ("train.rec", "train.idx", "property"):
        assert (tmp_path / "p2" / name).read_bytes() == (pack_root / name).read_bytes()


def test_cli_pack_stats_unpack(synth_root, tmp_path, capsys):
    assert main(["data", "pack", str(synth_root), str(tmp_path / "p")]) == 0
    assert "wrote 160 images of 16 identities (112x112 px)" in capsys.readouterr().out
    assert main(["data", "stats", str(tmp_path / "p"), "--min-images", "5"]) == 0
    out = capsys.readouterr().out
    assert "format: RecordIO pack (insightface layout; property: 16 classes, 112x112 px)" in out
    assert "identities: 16" in out and "images: 160" in out and "10 | ####" in out
    assert main(["data", "unpack", str(tmp_path / "p"), str(tmp_path / "u")]) == 0
    assert len(list((tmp_path / "u").rglob("*.jpg"))) == 160


def test_cli_synth_pack_writes_a_verification_set(tmp_path, capsys):
    from fr_lib.data.bin_sets import load_bin

    rc = main(["data", "synth", str(tmp_path / "s"), "--format", "pack", "--identities", "6",
               "--images-per-identity", "3", "--size", "48", "--workers", "0", "--bin-pairs", "20"])
    assert rc == 0
    idx = scan_folder(tmp_path / "s")
    assert isinstance(idx, PackIndex) and idx.num_classes == 6 and len(idx) == 18 and idx.property == (6, 48, 48)
    images, issame = load_bin(tmp_path / "s" / "synth.bin")
    assert len(images) == 40 and issame.sum() == 10
    held_out = {bytes(b) for b in images}
    trained = {idx.images.read_bytes(int(rel.split("/")[1][:-4])) for rel, _ in idx.samples}
    assert not held_out & trained                                                # held-out identities only


def _damage(root, how):
    rec, idx = root / "train.rec", root / "train.idx"
    if how == "missing idx":
        idx.unlink()
    elif how == "truncated rec":
        rec.write_bytes(rec.read_bytes()[:-7])
    elif how == "idx past the end":
        with open(idx, "a") as f:
            f.write(f"9999\t{rec.stat().st_size + 64}\n")
    elif how == "wrong magic":
        data = bytearray(rec.read_bytes())
        data[:4] = struct.pack("<I", 0x12345678)
        rec.write_bytes(bytes(data))


@pytest.mark.parametrize("how, message", [("missing idx", "has train.rec but no train.idx"),
                                          ("truncated rec", "truncated"),
                                          ("idx past the end", "points to byte"),
                                          ("wrong magic", "no RecordIO magic")])
def test_bad_packs_give_one_clear_error(tmp_path, capsys, how, message):
    root = tmp_path / "p"
    with IndexedRecordWriter(root / "train.rec") as w:
        w.write(0, pack_payload(IRHeader(0, [3, 4])))
        for k in (1, 2):
            w.write(k, pack_payload(IRHeader(0, 0.0, k, 0), _jpeg(k)))
        w.write(3, pack_payload(IRHeader(0, [1, 3])))
    assert len(scan_folder(root)) == 2
    _damage(root, how)
    for argv in (["data", "stats", str(root)], ["data", "unpack", str(root), str(tmp_path / "u")],
                 ["data", "pack", str(root), str(tmp_path / "q")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises((FileNotFoundError, ValueError), match=message):
        FaceFolder(root)


def test_identity_records_that_are_missing(tmp_path):
    with IndexedRecordWriter(tmp_path / "train.rec") as w:
        w.write(0, pack_payload(IRHeader(0, [2, 4])))
        w.write(1, pack_payload(IRHeader(0, 0.0, 1, 0), _jpeg(1)))
        w.write(2, pack_payload(IRHeader(0, [1, 2])))
    with pytest.raises(ValueError, match="identity record 3 .* is not in the index"):
        scan_folder(tmp_path)


def test_namespace_config_is_enough(pack_root):
    """build_training_data reads attributes only: a SimpleNamespace with the DataConfig fields works too."""
    from fr_lib.training.data import build_training_data

    cfg = SimpleNamespace(**{**_DataCfg(root=str(pack_root)).__dict__})
    assert build_training_data(cfg, "imagenet").num_classes == 12


def test_tensor_decode_path_gives_the_folder_pixels(pack_root, synth_root):
    """FaceFolder decodes pack JPEGs straight to tensors when the transform starts with v2.ToImage: same output."""
    from fr_lib.data import build_transforms

    tf = build_transforms("imagenet", 96, train=True)
    a, b = FaceFolder(scan_folder(synth_root), tf), FaceFolder(scan_folder(pack_root), tf)
    assert b._tensor_input and not a._tensor_input
    for i in (0, 51, 150):
        torch.manual_seed(i)
        x = a[i][0]
        torch.manual_seed(i)
        assert torch.equal(x, b[i][0])
    raw = b.load(5, tensor=True)
    assert raw.dtype == torch.uint8 and torch.equal(raw.permute(1, 2, 0), torch.from_numpy(_pixels(a.load(5)).copy()))


def test_identity_records_split_by_the_magic_and_bad_ones(tmp_path):
    def build(root, second_identity_label):
        with IndexedRecordWriter(root / "train.rec") as w:
            w.write(0, pack_payload(IRHeader(0, [4, 6])))
            for k in (1, 2, 3):
                w.write(k, pack_payload(IRHeader(0, 0.0, k, 0), _jpeg(k)))
            # id = the magic: this header's first part ends at payload byte 8 (the vectorised path's slow case)
            w.write(4, pack_payload(IRHeader(0, [1, 3], MAGIC, 0)))
            w.write(5, pack_payload(IRHeader(0, second_identity_label, 5, 0)))

    build(tmp_path / "good", [3, 4])
    idx = scan_folder(tmp_path / "good")
    assert idx.counts() == [2, 1] and idx.samples[2] == ("00001/00000003.jpg", 1)
    build(tmp_path / "bad", 7.0)
    with pytest.raises(ValueError, match="identity record 5 has 0 label"):
        scan_folder(tmp_path / "bad")


def test_repacking_a_pack_is_byte_identical(pack_root, tmp_path, capsys):
    write_pack(scan_folder(pack_root), tmp_path / "again", progress=False)
    for name in ("train.rec", "train.idx", "property"):
        assert (tmp_path / "again" / name).read_bytes() == (pack_root / name).read_bytes()
    assert main(["data", "pack", str(pack_root), str(pack_root)]) == 2
    assert "is SRC" in capsys.readouterr().err


def test_stats_verify_lists_records_that_do_not_decode(tmp_path, capsys):
    with IndexedRecordWriter(tmp_path / "train.rec") as w:
        w.write(0, pack_payload(IRHeader(0, [4, 5])))
        w.write(1, pack_payload(IRHeader(0, 0.0, 1, 0), _jpeg(1)))
        w.write(2, pack_payload(IRHeader(0, 0.0, 2, 0), _jpeg(2)[:40]))       # cut-off JPEG
        w.write(3, pack_payload(IRHeader(0, 0.0, 3, 0), b""))                 # no image bytes
        w.write(4, pack_payload(IRHeader(0, [1, 4])))
    assert main(["data", "stats", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "images: 3" in out and "skipped: 0" in out and "--verify decodes" in out
    assert main(["data", "stats", str(tmp_path), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "skipped: 2" in out and "00000/00000002.jpg: truncated image" in out
    assert "00000/00000003.jpg: empty image (0 bytes)" in out
