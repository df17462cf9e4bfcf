"""fr_lib.data.synth: determinism, layout, imbalanced counts, face placement, identity signal vs nuisance; fr data CLI."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fr_lib.data.synth import generate_dataset, identity_traits, image_counts


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_same_seed_gives_byte_identical_files_whatever_the_workers(tmp_path):
    a = generate_dataset(tmp_path / "a", identities=3, images_per_identity=2, size=64, seed=7, workers=0)
    generate_dataset(tmp_path / "b", identities=3, images_per_identity=2, size=64, seed=7, workers=2)
    generate_dataset(tmp_path / "c", identities=3, images_per_identity=2, size=64, seed=8, workers=0)
    names = _files(tmp_path / "a")
    assert names == _files(tmp_path / "b") == _files(tmp_path / "c")
    assert names == [f"id_{i:05d}/{j:04d}.jpg" for i in range(3) for j in range(2)]
    assert a["images"] == 6 and a["counts"] == [2, 2, 2]
    for n in names:
        assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes()
    assert any((tmp_path / "a" / n).read_bytes() != (tmp_path / "c" / n).read_bytes() for n in names)


def test_images_are_rgb_jpegs_of_the_requested_size(synth_root):
    files = sorted(synth_root.glob("*/*.jpg"))
    assert len(files) == 160 and len({f.parent.name for f in files}) == 16
    with Image.open(files[0]) as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (112, 112)


def test_imbalanced_counts_are_long_tailed_deterministic_and_bounded():
    counts = image_counts(500, 40, seed=3, imbalanced=True)
    assert counts == image_counts(500, 40, seed=3, imbalanced=True)
    assert counts != image_counts(500, 40, seed=4, imbalanced=True)
    assert min(counts) >= max(2, 40 // 5) and max(counts) <= 400
    c = np.array(counts)
    assert np.median(c) < c.mean()              # right-skewed, like CASIA-WebFace
    assert c.max() > 3 * np.median(c)
    assert abs(c.mean() - 40) < 0.2 * 40        # the mean stays near images_per_identity
    assert image_counts(5, 40) == [40] * 5


def test_imbalanced_dataset_follows_image_counts(tmp_path):
    r = generate_dataset(tmp_path, identities=6, images_per_identity=4, size=48, seed=1, imbalanced=True, workers=0)
    assert r["counts"] == image_counts(6, 4, seed=1, imbalanced=True)
    for i, n in enumerate(r["counts"]):
        assert len(list((tmp_path / f"id_{i:05d}").glob("*.jpg"))) == n


def test_eye_positions_follow_the_arcface_template():
    # ArcFace 112-px template eyes: (38.29, 51.70) and (73.53, 51.50); traits are drawn around them
    t = [identity_traits(0, i) for i in range(400)]
    left = np.array([x["face_cx"] - x["eye_half_dist"] for x in t])
    right = np.array([x["face_cx"] + x["eye_half_dist"] for x in t])
    eye_y = np.array([x["eye_y"] for x in t])
    assert abs(left.mean() - 38.29) < 1.0 and abs(right.mean() - 73.53) < 1.0 and abs(eye_y.mean() - 51.6) < 1.0
    assert left.std() > 0.5  # identities differ in geometry


def test_identity_signal_present_but_raw_pixels_do_not_solve_it(synth_root):
    """1-nearest-neighbour on 16x16 raw pixels (leave-one-out): well above chance (identity cues), well below
    perfect (pose, lighting, background, occlusion nuisance)."""
    from fr_lib.data import scan_folder

    index = scan_folder(synth_root)
    x = np.stack([np.asarray(Image.open(index.root / p).resize((16, 16), Image.BILINEAR), np.float32).ravel()
                  for p, _ in index.samples])
    x -= x.mean(1, keepdims=True)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    y = np.array(index.targets)
    acc = (y[s.argmax(1)] == y).mean()
    chance = 1 / len(index.classes)
    assert 3 * chance < acc < 0.9


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="identities"):
        generate_dataset(tmp_path, identities=0, images_per_identity=3)
    with pytest.raises(ValueError, match="size"):
        generate_dataset(tmp_path, identities=1, images_per_identity=1, size=8)


def test_cli_synth_then_stats(tmp_path, capsys):
    from fr_lib.cli import main

    out = tmp_path / "demo"
    assert main(["data", "synth", str(out), "--identities", "4", "--images-per-identity", "3", "--size", "48",
                 "--seed", "2", "--workers", "0"]) == 0
    assert main(["data", "stats", str(out)]) == 0
    text = capsys.readouterr().out
    assert "identities: 4" in text and "images: 12" in text and "skipped: 0" in text
