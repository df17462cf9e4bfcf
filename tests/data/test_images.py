"""fr_lib.data.images is the one image reader: `fr data stats` (scan) and `fr align` agree on what an image is and
read the same pixels; one ImageLoadError for every caller."""
import pickle
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from fr_lib.align import folder as align_folder_module
from fr_lib.align.image import read_rgb as align_read_rgb
from fr_lib.data import ImageLoadError, load_rgb, read_rgb, scan_folder, to_rgb_array
from fr_lib.recognition import pipeline


@pytest.fixture()
def odd_root(tmp_path):
    """root/person/ holding readable images of odd kinds, files that are no images, and broken images."""
    photo = Image.fromarray(skdata.astronaut()).resize((64, 64))
    person = tmp_path / "root" / "person"
    person.mkdir(parents=True)
    photo.save(person / "good.jpg")
    photo.save(person / "UPPER.PNG")
    photo.convert("1").save(person / "bilevel.pbm")                   # an extension only one set used to have
    photo.convert("RGBA").save(person / "rgba.webp")
    Image.fromarray((np.asarray(photo.convert("L")).astype(np.uint16) * 257)).save(person / "deep16.tif")
    photo.save(person / ".hidden.jpg")
    (person / "notes.txt").write_text("not an image")
    (person / "noext").write_bytes((person / "good.jpg").read_bytes())
    (person / "empty.jpg").write_bytes(b"")
    (person / "garbage.jpg").write_text("this is text")
    (person / "truncated.png").write_bytes((person / "UPPER.PNG").read_bytes()[:200])
    return tmp_path / "root"


def test_scan_and_align_agree_on_a_folder_with_odd_files(odd_root):
    index = scan_folder(odd_root, use_cache=False)
    usable = {rel for rel, _ in index.samples}
    skipped = dict(index.skipped)
    candidates, others = align_folder_module._scan(odd_root)          # what fr align would try to read
    read, failed = {}, {}
    for rel in candidates:
        try:
            read[rel] = align_read_rgb(odd_root / rel)
        except ImageLoadError as e:
            failed[rel] = e.reason
    assert usable == set(read) == {f"person/{n}" for n in ("good.jpg", "UPPER.PNG", "bilevel.pbm", "rgba.webp",
                                                           "deep16.tif")}
    assert set(failed) == {"person/empty.jpg", "person/garbage.jpg", "person/truncated.png"}
    for rel, reason in failed.items():
        assert skipped[rel] == reason                                  # the same words in both reports
    assert set(skipped) - set(failed) == others == {"person/.hidden.jpg", "person/notes.txt", "person/noext"}
    for rel, pixels in read.items():                                   # and the same pixels
        assert np.array_equal(pixels, np.asarray(index.load(rel))), rel


def test_one_error_type_for_every_reader(tmp_path):
    assert align_read_rgb is read_rgb and pipeline.ImageLoadError is ImageLoadError
    (tmp_path / "bad.jpg").write_text("text")
    for reader in (load_rgb, read_rgb, pipeline.load_image):
        with pytest.raises(ImageLoadError, match=r"cannot read .*bad.jpg: not a recognised image format") as e:
            reader(tmp_path / "bad.jpg")
        assert isinstance(e.value, OSError) and isinstance(e.value, ValueError)   # file problem and bad input
    with pytest.raises(ImageLoadError, match="not found"):
        pipeline.load_image(tmp_path / "missing.png")
    with pytest.raises(ImageLoadError, match="shape"):
        pipeline.load_image(np.zeros((4, 4, 5), np.uint8))
    err = pickle.loads(pickle.dumps(ImageLoadError("a/b.jpg", "truncated image")))   # crosses worker processes
    assert (err.path, err.reason, str(err)) == ("a/b.jpg", "truncated image", "cannot read a/b.jpg: truncated image")


def test_images_in_memory_convert_as_files_do(tmp_path):
    rgba = np.array([[[200, 10, 20, 255], [1, 2, 3, 0], [100, 100, 100, 128]]], np.uint8)
    deep = np.array([[0, 257 * 10, 65535, 32896]], np.uint16)
    for name, image in (("a.png", Image.fromarray(rgba, "RGBA")), ("b.png", Image.fromarray(deep))):
        image.save(tmp_path / name)
        with Image.open(tmp_path / name) as opened:
            assert np.array_equal(to_rgb_array(opened), read_rgb(tmp_path / name)), name
    assert read_rgb(tmp_path / "b.png")[0, :, 0].tolist() == [0, 10, 255, 128]   # 16-bit: v / 257, not clipped
    out = read_rgb(tmp_path / "a.png")
    assert out.flags.c_contiguous and out.dtype == np.uint8 and out.shape == (1, 3, 3)
    assert out[0, 1].tolist() == [255, 255, 255]                                   # transparent: over white


def test_reading_a_photo_imports_no_torch(tmp_path):
    Image.fromarray(skdata.astronaut()).save(tmp_path / "a.png")
    code = ("import sys; from fr_lib.align import read_rgb; from fr_lib.recognition.pipeline import load_image; "
            f"assert load_image({str(tmp_path / 'a.png')!r}).shape == (512, 512, 3); "
            f"read_rgb({str(tmp_path / 'a.png')!r}); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
