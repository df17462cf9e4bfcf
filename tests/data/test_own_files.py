"""fr_lib's own files in a data folder (fr align's skipped.csv, resume manifest, lock and settings; temp files of
interrupted atomic writes) are never input: aligning a real photo folder and scanning the result reports no bad
file of the project's own making, while a user's stray file is still reported."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fr_lib.cli import main
from fr_lib.data.scan import OWN_ROOT_FILES, is_own_file, scan_folder
from fr_lib.io import temp_path_for


def test_is_own_file():
    for name in OWN_ROOT_FILES:
        assert is_own_file(name)
        assert not is_own_file(f"alice/{name}")  # only fr align's place for it, the root, is reserved
    tmp = temp_path_for("/tmp/fr-own-files-test/alice/0001.jpg")
    tmp.unlink()
    assert is_own_file(f"alice/{tmp.name}") and is_own_file(tmp.name)
    assert not is_own_file("alice/0001.jpg") and not is_own_file("notes.txt") and not is_own_file(".DS_Store")


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    """SRC: two identities of real photos (skimage's astronaut, a mirrored copy) and a photo with no face ->
    fr align -> DST (skipped.csv lists the no-face photo)."""
    from skimage import data

    src = tmp_path_factory.mktemp("own") / "photos"
    face = data.astronaut()
    for person, img in (("eileen", face), ("mirror", face[:, ::-1])):
        (src / person).mkdir(parents=True)
        Image.fromarray(np.ascontiguousarray(img)).save(src / person / "0001.jpg", quality=95)
        Image.fromarray(np.ascontiguousarray(img[::-1])).save(src / person / "upside.jpg", quality=95)  # no face
    Image.fromarray(np.full((200, 200, 3), 127, np.uint8)).save(src / "eileen" / "grey.png")
    dst = src.parent / "aligned"
    assert main(["align", str(src), str(dst), "--size", "112", "--device", "cpu", "--quiet"]) == 0
    return src, dst


def test_scan_of_an_aligned_folder_reports_nothing_of_fr_lib(aligned, tmp_path):
    _, dst = aligned
    assert (dst / "skipped.csv").is_file() and "grey.png" in (dst / "skipped.csv").read_text()
    assert {p.name for p in dst.iterdir() if p.is_file()} >= {"skipped.csv", ".fr_align.json", ".fr_align.lock"}
    # what an interrupted atomic write leaves: a temp file at the root and one in an identity folder
    for leftover in (temp_path_for(dst / "skipped.csv"), temp_path_for(dst / "eileen" / "0002.jpg")):
        leftover.write_bytes(b"partial")
    index = scan_folder(dst, use_cache=False)
    assert index.skipped == []
    assert index.classes == ["eileen", "mirror"] and [rel for rel, _ in index.samples] == ["eileen/0001.jpg",
                                                                                            "mirror/0001.jpg"]
    # a user's own stray file is still reported, with its reason
    (dst / "notes.txt").write_text("mine")
    (dst / "mirror" / "thumbs.db").write_bytes(b"x")
    index = scan_folder(dst, use_cache=False)
    assert sorted(index.skipped) == [("mirror/thumbs.db", "not an image file (.db)"),
                                     ("notes.txt", "file outside an identity folder")]
    for p in (dst / "notes.txt", dst / "mirror" / "thumbs.db"):
        p.unlink()


def test_fr_data_stats_and_a_realign_see_no_own_files(aligned, capsys):
    src, dst = aligned
    capsys.readouterr()
    assert main(["data", "stats", str(dst), "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "skipped.csv" not in out and ".fr_align" not in out and ".tmp" not in out, out
    # aligning the aligned folder again (DST as a SRC): its reports are not taken for photos or skips
    again = dst.parent / "again"
    assert main(["align", str(dst), str(again), "--size", "112", "--device", "cpu", "--quiet"]) == 0
    skipped = (again / "skipped.csv").read_text()
    assert "skipped.csv" not in skipped and ".fr_align" not in skipped
