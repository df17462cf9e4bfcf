"""LFW View-2 style pairs files for any identity-folder dataset: write one, and resolve one to image paths.

Format (LFW's pairs.txt): first line "<folds> <N>"; then, per fold, N matched lines ``name<TAB>n1<TAB>n2`` followed
by N mismatched lines ``name1<TAB>n1<TAB>name2<TAB>n2``. Parsing (space- or tab-separated) is
fr_lib.evaluation.metrics.read_lfw_pairs; this module adds the writer and the mapping from (name, n) to a file.

Which file is (name, n)? LFW names its files ``name/name_%04d.jpg`` and n is that number. Our folders hold
arbitrary file names (``07201/001085.jpg``), so here n is the 1-based position of the file in the identity folder's
image files (IMAGE_EXTENSIONS, hidden files excluded) sorted by file name. read_lfw_pairs tries the LFW name first
(any image extension, so LFW aligned to .png still resolves) and falls back to the sorted position, so genuine LFW
files and ours both work. Write the pairs file from the folder you evaluate (e.g. the aligned crops): if alignment
dropped a photo, later positions in that folder shift by one, which keeps every pair's same/different label (it
stays inside the same identity folder) but changes which photo is used.
"""
from __future__ import annotations

import os
import warnings
from collections import Counter
from math import comb
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from fr_lib.data import IMAGE_EXTENSIONS, scan_folder
from fr_lib.evaluation.metrics import read_lfw_pairs as parse_lfw_pairs
from fr_lib.evaluation.metrics.verification import LFWPair
from fr_lib.io import atomic_write

__all__ = ["write_lfw_pairs", "read_lfw_pairs", "identity_images", "resolve_lfw_image", "LFWPair"]


def identity_images(folder) -> list[str]:
    """File names in one identity folder that the pair index n counts: image extensions, not hidden, sorted."""
    return sorted(n for n in os.listdir(folder)
                  if not n.startswith(".") and Path(n).suffix.lower() in IMAGE_EXTENSIONS
                  and not (Path(folder) / n).is_dir())


# ------------------------------------------------------------------------------------------------------ writing
def _assign_folds(counts: dict[str, int], folds: int, rng: np.random.Generator) -> list[list[str]] | None:
    """Identity-disjoint folds (as LFW View 2): identities sorted by image count (ties in seeded random order) are
    dealt in snake order 0..F-1, F-1..0, ... so folds get equal numbers of identities and similar numbers of
    possible matched pairs. None when some fold could not get >= 2 identities, one of them with >= 2 images."""
    names = list(counts)
    order = sorted(rng.permutation(len(names)).tolist(), key=lambda i: -counts[names[i]])
    out: list[list[str]] = [[] for _ in range(folds)]
    for rank, i in enumerate(order):
        lap, pos = divmod(rank, folds)
        out[pos if lap % 2 == 0 else folds - 1 - pos].append(names[i])
    ok = all(len(f) >= 2 and any(counts[n] >= 2 for n in f) for f in out)
    return out if ok else None


def _matched(usable: dict[str, list[int]], names: Sequence[str], n: int, used: set,
             rng: np.random.Generator) -> list[tuple]:
    """n distinct same-identity pairs (name, i, j), i < j: an identity drawn uniformly among those with unused
    pairs left (so large identities do not dominate), then a uniform pair of its images; rejection of repeats."""
    taken = Counter(p[0] for p in used if len(p) == 3)
    left = {k: comb(len(usable[k]), 2) - taken[k] for k in names}
    live = sorted(k for k in names if left[k] > 0)
    out = []
    while len(out) < n:
        if not live:
            raise RuntimeError("matched pairs exhausted")  # callers check capacity first
        k = live[rng.integers(len(live))]
        i, j = sorted(rng.choice(usable[k], size=2, replace=False).tolist())
        if (k, i, j) in used:
            continue
        used.add((k, i, j))
        out.append((k, i, j))
        left[k] -= 1
        if left[k] == 0:
            live.remove(k)
    return out


def _mismatched(usable: dict[str, list[int]], names: Sequence[str], n: int, used: set,
                rng: np.random.Generator) -> list[tuple]:
    """n distinct different-identity pairs (name1, i, name2, j) with (name1, i) < (name2, j): two identities drawn
    uniformly, one image of each; after many repeats the remaining candidates are enumerated instead."""
    names = sorted(names)
    out, tries = [], 0
    while len(out) < n and tries < 50 * n + 1000:
        tries += 1
        a, b = rng.choice(len(names), size=2, replace=False)
        p = tuple(sorted([(names[a], int(rng.choice(usable[names[a]]))),
                          (names[b], int(rng.choice(usable[names[b]])))]))
        key = (*p[0], *p[1])
        if key not in used:
            used.add(key)
            out.append(key)
    if len(out) < n:  # nearly exhausted (tiny data): sample the rest exactly
        rest = [(a, i, b, j) for x, a in enumerate(names) for b in names[x + 1:]
                for i in usable[a] for j in usable[b] if (a, i, b, j) not in used]
        for t in rng.choice(len(rest), size=n - len(out), replace=False):
            used.add(rest[t])
            out.append(rest[t])
    return out


def _capacity(usable: dict[str, list[int]], names: Iterable[str]) -> tuple[int, int]:
    """(possible matched pairs, possible mismatched pairs) among ``names``."""
    sizes = [len(usable[k]) for k in names]
    total = sum(sizes)
    return sum(comb(s, 2) for s in sizes), (total * total - sum(s * s for s in sizes)) // 2


def write_lfw_pairs(root, out_path, folds: int = 10, pairs_per_fold: int = 300, seed: int = 0,
                    identities: Sequence[str] | None = None, verify: bool = True, use_cache: bool = True,
                    progress: bool = True) -> dict:
    """Write an LFW View-2 format pairs file for ``root/<identity>/<image>`` (see the module docstring for n).

    folds: number of folds (LFW: 10). Folds are identity-disjoint, as in LFW View 2, whenever there are at least
        2 * folds identities and folds identities with >= 2 images; otherwise (with a warning) every fold draws from
        all identities, and no pair is repeated anywhere in the file.
    pairs_per_fold: N matched and N mismatched pairs per fold (LFW: 300); lowered, with a warning, to what the
        smallest fold allows.
    seed: pairs and fold assignment are a deterministic function of (folder contents, arguments).
    identities: draw only from these identity folders (e.g. the held-out identities of an open-set split).
    verify: decode each image once (fr_lib.data.scan_folder) so unreadable images are never chosen; they still
        count in the sorted positions n. use_cache, progress: passed to scan_folder (index cache, tqdm bar).

    Returns a summary dict: path, folds, pairs_per_fold, identity_disjoint, identities (used), skipped
    [(path, reason)]. Raises ValueError when no pair can be formed. The file is written atomically.
    """
    if folds < 1 or pairs_per_fold < 1:
        raise ValueError(f"folds and pairs_per_fold must be >= 1, got {folds}, {pairs_per_fold}")
    root = Path(root).expanduser().resolve()
    index = scan_folder(root, use_cache=use_cache, verify=verify, progress=progress)
    readable = {s for s, _ in index.samples}
    skipped = list(index.skipped)
    wanted = set(index.classes) if identities is None else set(identities)
    missing = sorted(wanted - set(index.classes))
    if identities is not None and missing:
        raise ValueError(f"{len(missing)} identities not found (or with no usable image) under {root}: {missing[:5]}")
    usable: dict[str, list[int]] = {}
    for name in sorted(wanted):
        if any(c.isspace() for c in name):  # the format is whitespace-separated
            skipped.append((f"{name}/", "identity name contains whitespace (not representable in pairs.txt)"))
            continue
        files = identity_images(root / name)
        usable[name] = [n for n, f in enumerate(files, 1) if f"{name}/{f}" in readable]
    usable = {k: v for k, v in usable.items() if v}

    rng = np.random.default_rng(seed)
    fold_ids = _assign_folds({k: len(v) for k, v in usable.items()}, folds, rng)
    disjoint = fold_ids is not None
    if disjoint:
        per = min(min(_capacity(usable, f)) for f in fold_ids)
    else:
        warnings.warn(f"{len(usable)} usable identities under {root} cannot fill {folds} identity-disjoint folds "
                      f"(need >= {2 * folds}, >= {folds} with 2+ images): folds share identities", stacklevel=2)
        fold_ids = [sorted(usable)] * folds
        per = min(_capacity(usable, usable)) // folds
    n = min(pairs_per_fold, per)
    if n < 1:
        raise ValueError(f"cannot form matched and mismatched pairs from {root}: {len(usable)} usable identities, "
                         f"{sum(len(v) >= 2 for v in usable.values())} with 2+ images")
    if n < pairs_per_fold:
        warnings.warn(f"only {n} matched + {n} mismatched pairs per fold possible (asked {pairs_per_fold})",
                      stacklevel=2)

    used: set = set()
    lines = [f"{folds}\t{n}"]
    for names in fold_ids:
        lines += [f"{k}\t{i}\t{j}" for k, i, j in sorted(_matched(usable, names, n, used, rng))]
        lines += [f"{a}\t{i}\t{b}\t{j}" for a, i, b, j in sorted(_mismatched(usable, names, n, used, rng))]
    out_path = Path(out_path)
    atomic_write(out_path, "\n".join(lines) + "\n")
    return {"path": str(out_path), "folds": folds, "pairs_per_fold": n, "identity_disjoint": disjoint,
            "identities": sorted(k for f in fold_ids for k in f) if disjoint else sorted(usable),
            "skipped": skipped}


# ------------------------------------------------------------------------------------------------------ reading
def resolve_lfw_image(root, name: str, n: int, _listing: dict | None = None) -> Path:
    """The file (name, n) refers to under root: LFW's ``name/name_%04d.<ext>`` if it exists (jpg first, then the
    other image extensions), else the n-th (1-based) of identity_images(root/name). FileNotFoundError otherwise."""
    folder = Path(root) / name
    for ext in (".jpg", *sorted(IMAGE_EXTENSIONS - {".jpg"})):
        p = folder / f"{name}_{n:04d}{ext}"
        if p.is_file():
            return p
    if _listing is None:
        _listing = {}
    if name not in _listing:
        _listing[name] = identity_images(folder) if folder.is_dir() else None
    files = _listing[name]
    if files is None:
        raise FileNotFoundError(f"no identity folder {folder}")
    if not 1 <= n <= len(files):
        raise FileNotFoundError(f"{folder} has {len(files)} images, the pairs file asks for image {n} "
                                f"(and there is no {name}_{n:04d}.jpg)")
    return folder / files[n - 1]


def read_lfw_pairs(pairs_txt, root) -> list[LFWPair]:
    """Parse an LFW-format pairs file (fr_lib.evaluation.metrics.read_lfw_pairs) and resolve each (name, n) under ``root``
    (LFW file names or our sorted positions, see the module docstring).

    Returns LFWPair(path1, path2, issame, fold) with absolute path strings, in file order (fold k = the k-th block of
    2N lines; pass ``[p.fold for p in pairs]`` as ``folds`` to lfw_10fold_accuracy). Raises FileNotFoundError
    counting the unresolvable images and naming the first few."""
    root = Path(root).expanduser().resolve()
    listing: dict = {}
    out, missing = [], []
    for pair in parse_lfw_pairs(pairs_txt):
        paths = []
        for rel in (pair.path1, pair.path2):  # "name/name_%04d.jpg" as the parser builds it
            name, file = rel.rsplit("/", 1)
            n = int(Path(file).stem.rsplit("_", 1)[1])
            try:
                paths.append(str(resolve_lfw_image(root, name, n, listing)))
            except FileNotFoundError as e:
                missing.append(str(e))
                paths.append("")
        out.append(LFWPair(paths[0], paths[1], pair.issame, pair.fold))
    if missing:
        raise FileNotFoundError(f"{pairs_txt}: {len(missing)} pair images not found under {root}; first: "
                                + "; ".join(missing[:3]))
    return out
