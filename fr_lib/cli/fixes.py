"""Bad-input errors that name their fix on the command line.

The library reports a data/config mismatch in its own terms (the config key or argument that caused it:
``min_images_per_identity=75``, ``batch_size 64``, ``image_size=64``); it cannot name ``fr``'s flags, since
fr_lib never imports config. ``with_fix`` adds, for the command that failed, the command-line change that fixes
it. One table of known mismatches, so every command words the same problem the same way.
"""
from __future__ import annotations

import re
from pathlib import Path

SMALL_FOLDER_MIN_IMAGES = 2  # what a small folder needs: one pair per identity for the open-set check


def _set(key: str, value) -> str:
    return f"--set {key}={value}"


def _min_images(m: re.Match, command: str, preset: str | None, cfg) -> str | None:
    if command in ("data stats", "data pack"):
        return f"lower the filter: --min-images {SMALL_FOLDER_MIN_IMAGES}"
    fix = _set("data.min_images_per_identity", SMALL_FOLDER_MIN_IMAGES)
    if command == "train" and preset == "full":
        return (f"the default preset 'full' is the CASIA-WebFace recipe (min_images_per_identity={m['min']}); for "
                f"a small folder use --preset small or {fix}")
    if command == "demo" and preset == "full":
        return f"the 'full' preset is the CASIA-WebFace recipe; for a small folder use --preset demo or {fix}"
    return f"lower it: {fix}"


def _image_size(m: re.Match, command: str, preset: str | None, cfg) -> str | None:
    if command == "eval":
        return f"embed at {m['min']} px or more, e.g. random-{m['backbone']}@{m['min']}"
    return f"{_set('data.image_size', m['min'])} or larger (or another --set model.backbone=...)"


def _whole_pixels(m: re.Match, command: str, preset: str | None, cfg) -> str | None:
    size = max(int(m["min"]), 112)
    if command == "eval":
        return f"embed at {size} px, e.g. random-<backbone>@{size}"
    return f"{_set('data.image_size', size)} (the aligned-crop size; at least {m['min']})"


def _batch_size(m: re.Match, command: str, preset: str | None, cfg) -> str | None:
    return f"data.batch_size must be >= 1: {_set('data.batch_size', 32)}"


def _full_batch(m: re.Match, command: str, preset: str | None, cfg) -> str | None:
    fit = max(1, int(m["n"]) // int(m["world"] or 1))  # data.batch_size is per process
    return f"lower the batch size to at most the images per process: {_set('data.batch_size', fit)}"


def _pk_batch(m: re.Match, command: str, preset: str | None, cfg) -> str | None:
    k = getattr(getattr(cfg, "data", None), "samples_per_class", None)
    if k:
        fit = int(m["got"]) * k
        return (f"a batch holds data.batch_size / data.samples_per_class identities: with {m['got']} identities "
                f"use {_set('data.batch_size', fit)} (or fewer), or more identities")
    return "lower data.batch_size (identities per batch = data.batch_size / data.samples_per_class)"


def _open_set(m: re.Match, command: str, preset: str | None, cfg) -> str | None:
    return (f"keep more identities (data.max_identities, data.min_images_per_identity) or hold out fewer: "
            f"{_set('data.eval_identity_fraction', 0)} skips the open-set check")


def _pack_file(m: re.Match, command: str, preset: str | None, cfg) -> str | None:
    folder = Path(m["path"]).parent
    flag = {"data stats": "", "data unpack": "", "eval": "--data "}.get(command, "--data ")
    return f"give the folder that holds train.rec and train.idx: {flag}{folder}"


_FIXES = [  # (pattern over str(error), fix(match, command, preset, cfg))
    (re.compile(r"identities below min_images_per_identity=(?P<min>\d+)"), _min_images),
    (re.compile(r"(?P<backbone>[\w.-]+) needs images of at least (?P<min>\d+) px"), _image_size),
    (re.compile(r"image_size must be a whole number of pixels >= (?P<min>\d+)"), _whole_pixels),
    (re.compile(r"need n >= 1 and batch_size >= 1, got \d+, -?\d+"), _batch_size),
    (re.compile(r"no full training batch: (?P<n>\d+) images, batch_size (?P<b>\d+)(?: x (?P<world>\d+))?"),
     _full_batch),
    (re.compile(r"P x K batches need at least P = (?P<p>\d+) identities, got (?P<got>\d+)"), _pk_batch),
    (re.compile(r"open-set split of \d+ identities leaves no training identity"), _open_set),
    (re.compile(r"dataset root (?P<path>\S+/(train\.rec|train\.idx)) does not exist or is not a folder"), _pack_file),
]


def with_fix(error: BaseException | str, command: str, preset: str | None = None, cfg=None) -> str:
    """The one-line message for ``error`` raised under ``fr COMMAND`` (e.g. 'train', 'data stats'): its text
    (first line only), followed by '; ' and the command-line change that fixes it when the mismatch is a known
    one. ``preset``/``cfg``: the preset name and config of the failed run, where there is one."""
    text = error if isinstance(error, str) else (str(error.args[0]) if isinstance(error, KeyError) and error.args
                                                 else str(error))
    text = " ".join(text.split())  # one line: a library message may span lines
    for pattern, fix in _FIXES:
        m = pattern.search(text)
        if m:
            hint = fix(m, command, preset, cfg)
            if hint and hint not in text:
                return f"{text}; {hint}"
    return text


def pack_given_for_photos(path, command: str) -> str | None:
    """The message for a RecordIO pack given where photo folders are expected (fr align, fr recipe), else None."""
    from fr_lib.data.pack import is_pack

    if not is_pack(Path(path)):
        return None
    then = "fr recipe DIR --already-aligned" if command == "recipe" else "fr train --data DIR"
    return (f"{path} is an insightface RecordIO pack (train.rec / train.idx), not a folder of photos: its faces "
            f"are aligned already; train on it directly (fr train --data {path}) or write it out as identity "
            f"folders with fr data unpack {path} DIR, then {then}")
