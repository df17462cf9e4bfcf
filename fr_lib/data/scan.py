"""Index an ImageFolder-style root (``root/<identity>/<image>``) with a per-folder index cache on disk.

The cache (one JSON file per root, outside the data root) stores, for every identity folder, its mtime and number
of entries together with the verdict on each file; a later scan re-reads only the folders whose mtime or entry count
changed, so a 494k-file CASIA-WebFace folder is decoded once, not every run.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fr_lib.data.images import ImageLoadError, image_file_problem, load_rgb
from fr_lib.io import atomic_write, is_temp_file

CACHE_VERSION = 1

# The files fr_lib itself writes into a data folder: never input, never reported as bad files. One list, used by
# this scan and by fr align's (fr_lib.align.folder names its files from here). At the root of a data folder:
ALIGN_SKIPPED_CSV = "skipped.csv"          # fr align's report of the photos it skipped
ALIGN_SKIP_LOG = ".fr_align_skipped.csv"   # fr align's append-only resume manifest
ALIGN_LOCK = ".fr_align.lock"              # held (flock) while fr align writes the folder
ALIGN_SETTINGS = ".fr_align.json"          # the settings of the fr align run that made the folder
OWN_ROOT_FILES = frozenset({ALIGN_SKIPPED_CSV, ALIGN_SKIP_LOG, ALIGN_LOCK, ALIGN_SETTINGS})
# ... and anywhere: the temp files of interrupted atomic writes (fr_lib.io.is_temp_file).


def is_own_file(rel: str | os.PathLike) -> bool:
    """True for a file fr_lib wrote into a data folder for itself: ``rel`` (relative to the data root) is one of
    OWN_ROOT_FILES at the root, or a temp file of an interrupted atomic write at any depth."""
    rel = Path(rel)
    return is_temp_file(rel.name) or (len(rel.parts) == 1 and rel.name in OWN_ROOT_FILES)


@dataclass
class FolderIndex:
    """The usable images of a root. ``samples``: (path relative to root, label); label i is identity ``classes[i]``.
    ``skipped``: (path relative to root, reason) for every unusable file or empty identity folder.
    ``excluded_identities``: (identity, reason) for identities removed by the count filters."""
    root: Path
    samples: list[tuple[str, int]]
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    excluded_identities: list[tuple[str, str]] = field(default_factory=list)

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def counts(self) -> list[int]:
        """Images per identity, indexed by label."""
        c = [0] * len(self.classes)
        for _, label in self.samples:
            c[label] += 1
        return c

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, rel: str):
        """The RGB PIL image of sample path ``rel`` (ImageLoadError when it does not decode)."""
        return load_rgb(self.root / rel)


def default_cache_dir() -> Path:
    """$FR_CACHE_DIR, else $XDG_CACHE_HOME/fr_lib/index, else ~/.cache/fr_lib/index."""
    if os.environ.get("FR_CACHE_DIR"):
        return Path(os.environ["FR_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fr_lib" / "index"


def _file_verdict(path: Path, name: str, verify: bool) -> str | None:
    """None if usable, else the reason it is skipped."""
    if not name.startswith(".") and path.is_dir():
        return "nested folder ignored (expected root/<identity>/<image>)"
    problem = image_file_problem(name)   # the rule fr align applies too
    if problem:
        return problem
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        if verify:
            load_rgb(path, draft_size=(32, 32))
    except ImageLoadError as e:
        return e.reason
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    return None


def _fingerprint(folder: Path) -> tuple[int, int, list[str]]:
    names = sorted(os.listdir(folder))
    return folder.stat().st_mtime_ns, len(names), names


def _scan_identity(folder: Path, verify: bool) -> dict:
    mtime, n, names = _fingerprint(folder)
    return {"mtime_ns": mtime, "n": n, "entries": [[name, _file_verdict(folder / name, name, verify)]
                                                    for name in names if not is_temp_file(name)]}


def _cache_path(root: Path, cache_dir: Path, verify: bool) -> Path:
    key = hashlib.sha1(f"{root}|{int(verify)}".encode("utf-8", "surrogateescape")).hexdigest()[:20]
    return cache_dir / f"{key}.json"


def _load_cache(path: Path, root: Path) -> dict:
    try:
        data = json.loads(path.read_text("utf-8"))
        if data.get("version") == CACHE_VERSION and data.get("root") == str(root):
            return data["dirs"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return {}


def _save_cache(path: Path, root: Path, dirs: dict) -> None:
    try:
        atomic_write(path, json.dumps({"version": CACHE_VERSION, "root": str(root), "dirs": dirs}))
    except OSError as e:
        warnings.warn(f"could not write the index cache {path}: {e}", stacklevel=3)


def scan_identities(root, use_cache: bool = True, cache_dir=None, verify: bool = True, workers: int | None = None,
                    progress: bool = False) -> tuple[dict, list[tuple[str, str]]]:
    """Raw scan: ({identity: {'mtime_ns', 'n', 'entries': [[file, reason_or_None], ...]}}, root-level skips)."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist or is not a folder")
    cache_file = _cache_path(root, Path(cache_dir) if cache_dir else default_cache_dir(), verify)
    cached = _load_cache(cache_file, root) if use_cache else {}
    root_skips, folders = [], []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir():
            if not entry.name.startswith("."):
                folders.append(entry.name)
        elif not entry.name.startswith(".") and not is_own_file(entry.name):  # dotfiles: tools' bookkeeping
            root_skips.append((entry.name, "file outside an identity folder"))

    def fresh(name):
        old = cached.get(name)
        if old is not None:
            st = os.stat(root / name)
            if old["mtime_ns"] == st.st_mtime_ns and old["n"] == len(os.listdir(root / name)):
                return old
        return None

    dirs, todo = {}, []
    for name in folders:
        hit = fresh(name)
        if hit is None:
            todo.append(name)
        else:
            dirs[name] = hit
    if todo:
        workers = workers or min(8, os.cpu_count() or 1)
        bar = None
        if progress and len(todo) > 50:
            from fr_lib.progress import progress_bar
            bar = progress_bar(total=len(todo), desc=f"scan {root.name}", unit="identity")
        # threads: PIL releases the GIL while decoding, so verification scales over cores
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for name, res in zip(todo, pool.map(lambda n: _scan_identity(root / n, verify), todo)):
                dirs[name] = res
                bar and bar.update(1)
        bar and bar.close()
    if use_cache and (todo or len(dirs) != len(cached)):
        _save_cache(cache_file, root, {n: dirs[n] for n in folders})
    return {n: dirs[n] for n in folders}, root_skips


def identity_filter(n_images: int, n_kept: int, min_images_per_identity: int, max_identities: int | None):
    """Why an identity with ``n_images`` usable images is left out when ``n_kept`` identities are already kept, or
    None to keep it: the one identity filter of folders and packs (fr_lib.data.pack.scan_pack)."""
    if n_images < min_images_per_identity:
        return f"{n_images} images < min_images_per_identity={min_images_per_identity}"
    if max_identities is not None and n_kept >= max_identities:
        return f"beyond max_identities={max_identities}"
    return None


def scan_folder(root, min_images_per_identity: int = 1, max_images_per_identity: int | None = None,
                max_identities: int | None = None, use_cache: bool = True, cache_dir=None, verify: bool = True,
                workers: int | None = None, progress: bool = False) -> FolderIndex:
    """Index ``root/<identity>/<image>``; identities sorted by name get labels 0..C-1.

    Filters: identities with fewer than ``min_images_per_identity`` usable images are excluded; the first
    ``max_images_per_identity`` images (sorted by file name) of each are kept; then the first ``max_identities``
    identities (sorted by name). ``verify`` decodes every image once (JPEGs at 1/8 scale) so corrupt and truncated
    files are caught here, not mid-epoch. The index is cached under ``cache_dir`` (default: default_cache_dir()).
    Raises FileNotFoundError for a missing root and ValueError naming the root when nothing usable remains.

    A root holding ``train.rec`` + ``train.idx`` (an insightface / im2rec RecordIO pack) is indexed by
    fr_lib.data.pack.scan_pack with the same filters and returns a PackIndex (a FolderIndex whose ``load`` reads
    records).
    """
    root_path = Path(root).expanduser().resolve()
    from fr_lib.data.pack import is_pack, scan_pack   # here: pack imports this module

    if is_pack(root_path):
        return scan_pack(root_path, min_images_per_identity, max_images_per_identity, max_identities,
                         progress=progress)
    dirs, skipped = scan_identities(root_path, use_cache, cache_dir, verify, workers, progress)
    samples, classes, excluded = [], [], []
    skipped = list(skipped)
    for identity, info in dirs.items():
        usable = []
        for name, reason in info["entries"]:
            if reason is None:
                usable.append(name)
            else:
                skipped.append((f"{identity}/{name}", reason))
        if not usable:
            skipped.append((f"{identity}/", "empty identity folder (no usable images)"))
            continue
        why = identity_filter(len(usable), len(classes), min_images_per_identity, max_identities)
        if why:
            excluded.append((identity, why))
            continue
        label = len(classes)
        classes.append(identity)
        samples.extend((f"{identity}/{name}", label) for name in usable[:max_images_per_identity])
    if not samples:
        why = (f"{len(excluded)} identities below min_images_per_identity={min_images_per_identity}" if excluded
               else f"{len(dirs)} identity folders, {len(skipped)} files/folders skipped")
        raise ValueError(f"no usable images under {root_path} ({why}); expected root/<identity>/<image>.jpg")
    return FolderIndex(root_path, samples, classes, skipped, excluded)
