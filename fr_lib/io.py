"""Writing files so that a reader never sees half of one: the one temp-file scheme of fr_lib.

    >>> atomic_write("out/table.md", text)                 # str or bytes
    >>> with atomic_path("runs/x/last.pt") as tmp:          # for writers that want a file name
    ...     torch.save(state, tmp)
    >>> save_figure(fig, "id_rate/roc_curves.png")

Every write goes to ``.<name>.<random>.fr-tmp<suffix>`` in the destination's folder (same file system, so the
final os.replace is atomic), is fsynced, and then replaces the destination. A crash leaves the old file or the new
one, plus at worst a temp file that ``is_temp_file`` recognises (data scans and resumable jobs skip and clean those).
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

TMP_MARK = ".fr-tmp"


def is_temp_file(name: str | os.PathLike) -> bool:
    """True for a temp file left by an interrupted atomic write (any folder)."""
    base = os.path.basename(os.fspath(name))
    return base.startswith(".") and TMP_MARK in base


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path_for(path: str | os.PathLike) -> Path:
    """A new, empty temp file beside ``path`` in the one scheme (for writers that commit later themselves)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{TMP_MARK}{path.suffix}", dir=path.parent)
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = True) -> Iterator[Path]:
    """Yield a temp path beside ``path`` (same suffix, so writers that pick a format by suffix work); on success it
    is fsynced and os.replace'd onto ``path``; on any error it is removed and the destination is left as it was."""
    tmp = temp_path_for(path)
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes, fsync: bool = True) -> Path:
    """Write ``data`` (str as UTF-8, or bytes) to ``path`` atomically; returns the path."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically and close it (figures in loops would otherwise pile up in memory)."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    return Path(path)


def safe_filename(name: str) -> str:
    """A model or identity name as one file-name component: anything but letters, digits, '.', '_', '-' -> '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "_"


def write_json(path: str | os.PathLike, obj) -> Path:
    """``obj`` as indented JSON (numpy scalars and paths through str), written atomically."""
    import json

    return atomic_write(path, json.dumps(obj, indent=2, default=str) + "\n")
