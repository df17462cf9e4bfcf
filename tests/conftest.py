"""Shared fixtures. ``synth_root``: a synthetic dataset (16 identities x 10 images, 112 px, seed 0) generated once
per test session into a temporary folder; the index cache of the session goes to a temporary folder too."""
from __future__ import annotations

import os
import sys

import pytest

# Shared helpers (tests/_recognition_utils.py) import by name from every test folder.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session", autouse=True)
def _index_cache_in_tmp(tmp_path_factory):
    """Keep fr_lib's on-disk index cache out of the user's home during tests."""
    old = os.environ.get("FR_CACHE_DIR")
    os.environ["FR_CACHE_DIR"] = str(tmp_path_factory.mktemp("fr_cache"))
    yield
    if old is None:
        os.environ.pop("FR_CACHE_DIR", None)
    else:
        os.environ["FR_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """Path to OUT/<id_NNNNN>/<NNNN>.jpg: 16 identities x 10 images, 112 x 112 RGB JPEG, seed 0 (read-only: copy
    it before modifying)."""
    from fr_lib.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("synth") / "synth-16x10"
    generate_dataset(root, identities=16, images_per_identity=10, size=112, seed=0, workers=0)
    return root
