"""scan_folder / load_rgb / FaceFolder on bad input, the index cache, identity filters, and `fr data stats`."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from fr_lib.data import FaceFolder, ImageLoadError, load_rgb, scan_folder
from fr_lib.data import scan as scan_module


@pytest.fixture()
def bad_root(synth_root, tmp_path):
    """A root with 3 good identities, every kind of bad file, odd image modes and non-ASCII names.
    Returns (root, expected_usable: set of relative paths, expected_skipped: {relative path: reason fragment})."""
    root = tmp_path / "bad"
    good = sorted(synth_root.glob("id_0000[0-2]/000[0-3].jpg"))
    usable, skipped = set(), {}
    for f in good:
        (root / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / f.parent.name / f.name)
        usable.add(f"{f.parent.name}/{f.name}")
    a, b = root / "id_00000", root / "id_00001"
    jpeg = good[0].read_bytes()
    (a / "zero.jpg").write_bytes(b"")
    skipped["id_00000/zero.jpg"] = "empty file"
    (a / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    skipped["id_00000/truncated.jpg"] = "truncated"
    (a / "garbage.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    skipped["id_00000/garbage.jpg"] = "not a recognised image"
    (a / "header_only.jpg").write_bytes(jpeg[:200] + b"\x00" * 50)
    skipped["id_00000/header_only.jpg"] = ""
    (a / "notes.txt").write_text("not a face")
    skipped["id_00000/notes.txt"] = "not an image file (.txt)"
    (a / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    skipped["id_00000/.DS_Store"] = "hidden file"
    (a / "nested").mkdir()
    skipped["id_00000/nested"] = "nested folder"
    img = Image.open(good[0]).convert("RGB")
    img.convert("CMYK").save(b / "cmyk.jpg")
    img.convert("L").save(b / "grey.png")
    rgba = img.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(b / "rgba.png")
    Image.fromarray(np.asarray(img.convert("L"), np.uint16) * 257).save(b / "deep16.png")
    img.convert("P").save(b / "palette.gif")
    usable |= {f"id_00001/{n}" for n in ("cmyk.jpg", "grey.png", "rgba.png", "deep16.png", "palette.gif")}
    uni = root / "José_Müller_李"
    uni.mkdir()
    shutil.copy(good[0], uni / "фото 1.jpg")
    usable.add("José_Müller_李/фото 1.jpg")
    (root / "empty_identity").mkdir()
    skipped["empty_identity/"] = "empty identity folder"
    (root / "only_bad").mkdir()
    (root / "only_bad" / "x.jpg").write_bytes(b"")
    skipped["only_bad/x.jpg"] = "empty file"
    skipped["only_bad/"] = "empty identity folder"
    (root / "README.txt").write_text("root-level file")
    skipped["README.txt"] = "outside an identity folder"
    return root, usable, skipped


def test_every_bad_file_is_skipped_with_a_reason_and_the_rest_is_usable(bad_root):
    root, usable, expected = bad_root
    index = scan_folder(root, use_cache=False)
    assert {p for p, _ in index.samples} == usable
    got = dict(index.skipped)
    assert set(got) == set(expected)
    for path, fragment in expected.items():
        assert fragment in got[path] and got[path], (path, got[path])
    assert index.classes == sorted(["José_Müller_李", "id_00000", "id_00001", "id_00002"])
    for path, label in index.samples:
        assert index.classes[label] == path.split("/")[0]


@pytest.mark.parametrize("name", ["cmyk.jpg", "grey.png", "rgba.png", "deep16.png", "palette.gif"])
def test_load_rgb_converts_every_mode_to_8bit_rgb(bad_root, name):
    root, _, _ = bad_root
    img = load_rgb(root / "id_00001" / name)
    assert img.mode == "RGB" and img.size == (112, 112)


def test_load_rgb_16bit_and_alpha_values(tmp_path):
    x16 = np.array([[0, 257 * 10, 65535, 32896]], np.uint16)
    Image.fromarray(x16).save(tmp_path / "a.png")
    out = np.asarray(load_rgb(tmp_path / "a.png"))
    assert out[0, :, 0].tolist() == [0, 10, 255, 128]  # x / 257, not clipped to white
    assert (out[..., 0] == out[..., 2]).all()
    rgba = np.array([[[200, 10, 20, 255], [1, 2, 3, 0], [100, 100, 100, 128]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "b.png")
    out = np.asarray(load_rgb(tmp_path / "b.png")).astype(int)
    assert out[0, 0].tolist() == [200, 10, 20]          # opaque: unchanged
    assert out[0, 1].tolist() == [255, 255, 255]        # transparent: white background
    assert np.abs(out[0, 2] - (100 * 128 + 255 * 127) / 255).max() <= 1  # alpha blend over white


def test_load_rgb_raises_a_clear_error(tmp_path):
    (tmp_path / "z.jpg").write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty file"):
        load_rgb(tmp_path / "z.jpg")
    with pytest.raises(ImageLoadError, match="not found"):
        load_rgb(tmp_path / "missing.jpg")


def test_face_folder_survives_files_broken_after_the_scan(synth_root, tmp_path):
    root = tmp_path / "r"
    shutil.copytree(synth_root / "id_00003", root / "id_00003")
    shutil.copytree(synth_root / "id_00004", root / "id_00004")
    index = scan_folder(root, use_cache=False)
    ds = FaceFolder(index)
    broken = ds.samples[2][0]
    data = (root / broken).read_bytes()
    (root / broken).write_bytes(data[: len(data) // 3])
    with pytest.warns(UserWarning, match="unreadable"):
        img, label = ds[2]
    assert label == ds.targets[2] and img.mode == "RGB"
    assert np.array_equal(np.asarray(img), np.asarray(load_rgb(root / ds.samples[3][0])))  # next of same identity
    assert ds.load_errors == [(broken, "truncated image")]
    assert all(ds[i][1] == ds.targets[i] for i in range(len(ds)))  # a whole pass, no crash


def test_root_with_nothing_usable_names_the_root(tmp_path):
    root = tmp_path / "nothing_here"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.jpg").write_bytes(b"")
    (root / "b").mkdir()
    with pytest.raises(ValueError, match="nothing_here"):
        scan_folder(root, use_cache=False)
    with pytest.raises(FileNotFoundError, match="missing_root"):
        scan_folder(tmp_path / "missing_root")


def test_identity_filters(synth_root, tmp_path):
    root = tmp_path / "f"
    for i, n in enumerate([2, 5, 8]):
        (root / f"p{i}").mkdir(parents=True)
        for j, f in enumerate(sorted((synth_root / f"id_0000{i}").glob("*.jpg"))[:n]):
            shutil.copy(f, root / f"p{i}" / f.name)
    idx = scan_folder(root, min_images_per_identity=5, use_cache=False)
    assert idx.classes == ["p1", "p2"] and idx.counts() == [5, 8]
    assert idx.excluded_identities[0][0] == "p0"
    idx = scan_folder(root, max_images_per_identity=3, max_identities=2, use_cache=False)
    assert idx.classes == ["p0", "p1"] and idx.counts() == [2, 3]
    assert [p for p, _ in idx.samples[2:]] == [f"p1/{j:04d}.jpg" for j in range(3)]
    with pytest.raises(ValueError, match="min_images_per_identity"):
        scan_folder(root, min_images_per_identity=50, use_cache=False)


def test_index_cache_is_reused_and_invalidated_when_a_folder_changes(synth_root, tmp_path, monkeypatch):
    root, cache = tmp_path / "c", tmp_path / "cache"
    shutil.copytree(synth_root / "id_00005", root / "id_00005")
    shutil.copytree(synth_root / "id_00006", root / "id_00006")
    first = scan_folder(root, cache_dir=cache)
    assert len(list(cache.glob("*.json"))) == 1
    assert not any(p.suffix == ".json" for p in root.rglob("*"))  # nothing written inside the data root

    calls = []
    real = scan_module._file_verdict
    monkeypatch.setattr(scan_module, "_file_verdict", lambda *a: calls.append(a[1]) or real(*a))
    again = scan_folder(root, cache_dir=cache)
    assert again.samples == first.samples and calls == []  # served from the cache, nothing re-read

    (root / "id_00006" / "new.jpg").write_bytes(b"")  # one folder changes: only it is rescanned
    changed = scan_folder(root, cache_dir=cache)
    assert ("id_00006/new.jpg", "empty file (0 bytes)") in changed.skipped
    assert len(calls) == 11  # the 10 images of id_00006 + new.jpg
    shutil.copytree(synth_root / "id_00007", root / "id_00007")  # a new identity appears
    assert scan_folder(root, cache_dir=cache).classes == ["id_00005", "id_00006", "id_00007"]
    calls.clear()
    scan_folder(root, cache_dir=cache, use_cache=False)
    assert len(calls) == 31


def test_cli_stats_reports_bad_files_without_traceback(bad_root, capsys):
    from fr_lib.cli import main

    root, usable, expected = bad_root
    assert main(["data", "stats", str(root), "--no-cache"]) == 0
    out, err = capsys.readouterr()
    assert "identities: 4" in out and f"images: {len(usable)}" in out
    assert f"skipped: {len(expected)}" in out
    for path in expected:
        assert path in out
    assert "Traceback" not in out + err


def test_cli_stats_on_unusable_or_missing_root(tmp_path, capsys):
    from fr_lib.cli import main

    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "a" / "junk.txt").write_text("x")
    assert main(["data", "stats", str(tmp_path / "empty")]) == 2  # bad input, as for every fr command
    out, err = capsys.readouterr()
    assert "a/junk.txt" in out and "no usable images" in err and str(tmp_path / "empty") in err
    assert main(["data", "stats", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
