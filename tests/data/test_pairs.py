"""LFW View-2 pairs files: writer properties (counts, identity-disjoint folds, no repeats, seed) and resolution of
both LFW file names and our sorted-position convention."""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from PIL import Image

from fr_lib.evaluation.metrics import lfw_10fold_accuracy
from fr_lib.data.lfw_pairs import identity_images, read_lfw_pairs, write_lfw_pairs

# The first matched and mismatched lines of LFW's own pairs.txt (fold 1), with a header for 2 folds of 2 pairs.
LFW_SNIPPET = """2\t2
Abel_Pacheco\t1\t4
Akhmed_Zakayev\t1\t3
AJ_Cook\t1\tMarsha_Thomason\t1
AJ_Lamas\t1\tZach_Safrin\t1
Akhmed_Zakayev\t2\t3
Amber_Tamblyn\t1\t2
Aaron_Guiel\t1\tReese_Witherspoon\t3
Abel_Pacheco\t2\tAkhmed_Zakayev\t1
"""


def _png(path, value: int) -> None:
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """40 identities (non-LFW names) with 2..9 images named in random (non-LFW) order; one identity also holds an
    undecodable image, a hidden file and a text file, which the writer must never pick."""
    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(1)
    for k in range(40):
        d = root / f"{1000 + 37 * k:05d}"
        d.mkdir()
        for v in rng.choice(10 ** 6, size=int(rng.integers(2, 10)), replace=False):
            _png(d / f"{v:06d}.png", int(v % 251))
    bad = root / "01000"
    (bad / "000500.jpg").write_bytes(b"not a jpeg")
    (bad / ".DS_Store").write_bytes(b"x")
    (bad / "notes.txt").write_text("x")
    return root


def _lines(path):
    text = path.read_text().splitlines()
    return text[0].split(), [ln.split("\t") for ln in text[1:]]


def _endpoints(fields):
    """((name1, n1), (name2, n2)) of one pair line."""
    if len(fields) == 3:
        return (fields[0], int(fields[1])), (fields[0], int(fields[2]))
    return (fields[0], int(fields[1])), (fields[2], int(fields[3]))


def test_format_counts_and_disjoint_folds(folder, tmp_path):
    out = tmp_path / "pairs.txt"
    summary = write_lfw_pairs(folder, out, folds=4, pairs_per_fold=12, seed=0, use_cache=False)
    header, body = _lines(out)
    assert header == ["4", "12"] and summary["pairs_per_fold"] == 12 and summary["identity_disjoint"]
    assert len(body) == 4 * 2 * 12
    fold_names = []
    for k in range(4):
        block = body[k * 24:(k + 1) * 24]
        assert all(len(f) == 3 for f in block[:12]) and all(len(f) == 4 for f in block[12:])
        assert all(int(f[1]) < int(f[2]) for f in block[:12])   # LFW lists n1 < n2
        assert all(f[0] != f[2] for f in block[12:])
        fold_names.append({e[0] for f in block for e in _endpoints(f)})
    for a, b in itertools.combinations(fold_names, 2):
        assert not a & b                                         # LFW View 2: folds share no identity
    assert set().union(*fold_names) <= set(summary["identities"])
    keys = [frozenset(_endpoints(f)) for f in body]
    assert len(set(keys)) == len(keys)                           # no pair twice


def test_round_trip_resolves_sorted_positions(folder, tmp_path):
    out = tmp_path / "pairs.txt"
    write_lfw_pairs(folder, out, folds=4, pairs_per_fold=12, seed=3, use_cache=False)
    _, body = _lines(out)
    pairs = read_lfw_pairs(out, folder)
    assert len(pairs) == len(body)
    for k, (p, f) in enumerate(zip(pairs, body)):
        (a, i), (b, j) = _endpoints(f)
        # n is the 1-based position among the folder's image files sorted by name (text/hidden files excluded)
        files_a = sorted(x.name for x in (folder / a).iterdir() if x.suffix in (".png", ".jpg"))
        files_b = sorted(x.name for x in (folder / b).iterdir() if x.suffix in (".png", ".jpg"))
        assert p.path1 == str(folder / a / files_a[i - 1]) and p.path2 == str(folder / b / files_b[j - 1])
        assert p.issame == (a == b) and p.fold == k // 24
        assert not p.path1.endswith("000500.jpg") and not p.path2.endswith("000500.jpg")  # undecodable: never used
    assert "000500.jpg" in identity_images(folder / "01000")  # ... but it counts in the positions


def test_deterministic_by_seed(folder, tmp_path):
    files = [tmp_path / f"p{k}.txt" for k in range(3)]
    for f, seed in zip(files, (7, 7, 8)):
        write_lfw_pairs(folder, f, folds=4, pairs_per_fold=12, seed=seed, use_cache=False)
    assert files[0].read_bytes() == files[1].read_bytes()
    assert files[0].read_bytes() != files[2].read_bytes()


def test_identities_subset_and_small_data_fallback(folder, tmp_path):
    held_out = sorted(p.name for p in folder.iterdir())[:5]
    out = tmp_path / "pairs.txt"
    with pytest.warns(UserWarning) as caught:
        summary = write_lfw_pairs(folder, out, folds=10, pairs_per_fold=300, identities=held_out, use_cache=False)
    messages = " | ".join(str(w.message) for w in caught)
    assert "identity-disjoint" in messages and "pairs per fold possible" in messages
    assert not summary["identity_disjoint"]
    n = summary["pairs_per_fold"]
    header, body = _lines(out)
    assert header == ["10", str(n)] and len(body) == 20 * n and 1 <= n < 300
    assert {e[0] for f in body for e in _endpoints(f)} <= set(held_out)
    keys = [frozenset(_endpoints(f)) for f in body]
    assert len(set(keys)) == len(keys)


def test_too_little_data_is_a_clear_error(tmp_path):
    root = tmp_path / "one"
    (root / "solo").mkdir(parents=True)
    _png(root / "solo" / "a.png", 1)
    _png(root / "solo" / "b.png", 2)
    with pytest.raises(ValueError, match="cannot form"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_lfw_pairs(root, tmp_path / "p.txt", folds=2, use_cache=False)


@pytest.mark.parametrize("sep", ["\t", " "])
def test_genuine_lfw_snippet_resolves_lfw_file_names(tmp_path, sep):
    pairs_txt = tmp_path / "pairs.txt"
    pairs_txt.write_text(LFW_SNIPPET.replace("\t", sep))
    root = tmp_path / "lfw"
    needed = {"Abel_Pacheco": 4, "Akhmed_Zakayev": 3, "AJ_Cook": 1, "Marsha_Thomason": 1, "AJ_Lamas": 1,
              "Zach_Safrin": 1, "Amber_Tamblyn": 2, "Aaron_Guiel": 1, "Reese_Witherspoon": 3}
    for name, count in needed.items():
        (root / name).mkdir(parents=True)
        for n in range(1, count + 1):
            # LFW-style names; Amber_Tamblyn as aligned .png crops, and an extra file sorting first
            ext = ".png" if name == "Amber_Tamblyn" else ".jpg"
            _png(root / name / f"{name}_{n:04d}{ext}", n)
    _png(root / "Abel_Pacheco" / "Abel_Pacheco_0000_extra.jpg", 9)
    pairs = read_lfw_pairs(pairs_txt, root)
    assert [p.issame for p in pairs] == [True, True, False, False] * 2
    assert [p.fold for p in pairs] == [0] * 4 + [1] * 4
    assert pairs[0].path1 == str(root / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg")  # the LFW name, not position 1
    assert pairs[0].path2 == str(root / "Abel_Pacheco" / "Abel_Pacheco_0004.jpg")
    assert pairs[5].path2 == str(root / "Amber_Tamblyn" / "Amber_Tamblyn_0002.png")
    assert pairs[6].path2 == str(root / "Reese_Witherspoon" / "Reese_Witherspoon_0003.jpg")


def test_missing_images_are_counted_and_named(folder, tmp_path):
    pairs_txt = tmp_path / "pairs.txt"
    pairs_txt.write_text("1\t1\n01000\t1\t99\nnobody\t1\t01000\t2\n")
    with pytest.raises(FileNotFoundError, match=r"2 pair images not found.*asks for image 99"):
        read_lfw_pairs(pairs_txt, folder)


def test_pairs_feed_lfw_10fold_accuracy(folder, tmp_path):
    """End to end with a perfect 'model' (score 1 for same identity folder, 0 otherwise): accuracy 1 in each fold."""
    out = tmp_path / "pairs.txt"
    write_lfw_pairs(folder, out, folds=4, pairs_per_fold=12, use_cache=False)
    pairs = read_lfw_pairs(out, folder)
    scores = [float(p.path1.rsplit("/", 2)[-2] == p.path2.rsplit("/", 2)[-2]) for p in pairs]
    result = lfw_10fold_accuracy(scores, [p.issame for p in pairs], folds=[p.fold for p in pairs])
    np.testing.assert_array_equal(result.fold_accuracies, np.ones(4))
