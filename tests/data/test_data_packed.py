"""pack_folder / PackedFaces: pixels identical to decoding the files, labels, failures, no-op repack."""
from __future__ import annotations

import pickle
import shutil

import numpy as np
import torch

from fr_lib.data import FaceFolder, PackedFaces, build_transforms, load_rgb, pack_folder, scan_folder


def test_pack_matches_decoded_files(synth_root, tmp_path):
    index = scan_folder(synth_root)
    samples = index.samples[:30]
    out = pack_folder(samples, index.root, tmp_path / "p.npy", 112, classes=index.classes, progress=False)
    ds = PackedFaces(out)
    assert len(ds) == 30 and ds.samples == samples and ds.targets == [lab for _, lab in samples]
    assert ds.classes == index.classes and ds.failed == []
    for i in (0, 7, 29):
        x, y = ds[i]
        assert x.dtype == torch.uint8 and x.shape == (3, 112, 112) and y == samples[i][1]
        assert np.array_equal(x.permute(1, 2, 0).numpy(), np.asarray(load_rgb(index.root / samples[i][0])))
    xb, yb = ds.get_batch([29, 3, 7])
    assert torch.equal(xb[0], ds[29][0]) and torch.equal(xb[1], ds[3][0]) and yb.tolist() == [
        samples[29][1], samples[3][1], samples[7][1]]
    # the same transform on the pack and on the folder gives the same tensors
    t = build_transforms("facenet", 112, train=False)
    folder = FaceFolder(index, t, samples)
    torch.testing.assert_close(PackedFaces(out, t)[5][0], folder[5][0])


def test_repack_is_a_noop_and_other_sizes_resize(synth_root, tmp_path):
    index = scan_folder(synth_root)
    out = pack_folder(index.samples[:5], index.root, tmp_path / "p.npy", 112, progress=False)
    mtime = out.stat().st_mtime_ns
    assert pack_folder(index.samples[:5], index.root, out, 112, progress=False) == out
    assert out.stat().st_mtime_ns == mtime
    small = PackedFaces(pack_folder(index.samples[:5], index.root, tmp_path / "s.npy", 64, progress=False))
    assert small[0][0].shape == (3, 64, 64)
    ref = np.asarray(load_rgb(index.root / index.samples[0][0]).resize((64, 64), 2))  # PIL bilinear
    assert np.array_equal(small[0][0].permute(1, 2, 0).numpy(), ref)


def test_unreadable_files_are_left_out_and_reported(synth_root, tmp_path):
    root = tmp_path / "r"
    shutil.copytree(synth_root / "id_00000", root / "id_00000")
    index = scan_folder(root, use_cache=False)
    (root / index.samples[1][0]).write_bytes(b"")
    ds = PackedFaces(pack_folder(index.samples, root, tmp_path / "p.npy", 112, progress=False))
    assert len(ds) == len(index.samples) - 1 and ds.failed == [(index.samples[1][0], "empty file (0 bytes)")]
    assert ds.samples == [s for j, s in enumerate(index.samples) if j != 1]


def test_pickling_does_not_copy_the_memory_map(synth_root, tmp_path):
    index = scan_folder(synth_root)
    ds = PackedFaces(pack_folder(index.samples[:4], index.root, tmp_path / "p.npy", 112, progress=False))
    ds[0]
    blob = pickle.dumps(ds)
    assert len(blob) < 4 * 112 * 112 * 3
    assert torch.equal(pickle.loads(blob)[2][0], ds[2][0])
