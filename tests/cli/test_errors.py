"""Every user-facing error of `fr data|align|train|eval|compare|recognize|serve|recipe|demo` in one place: each bad
invocation exits 2 with one line on stderr that names the setting at fault and the command-line change that fixes
it, and no traceback. In-process through fr_lib.cli.main (fast); a few as subprocesses, to prove nothing else
reaches the terminal."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fr_lib.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def paths(tmp_path_factory, synth_root):
    """SMALL: 16 identities x 10 images (the synth_root fixture); PACK: a RecordIO pack; PHOTOS: one photo;
    EMPTY_TOKEN: an empty token file; OUT: a fresh folder per use."""
    from fr_lib.data.synth import generate_pack

    base = tmp_path_factory.mktemp("errors")
    pack = base / "pack"
    generate_pack(pack, identities=6, images_per_identity=4, size=112, seed=0, workers=0, bin_identities=2,
                  bin_pairs=20)
    photos = base / "photos" / "alice"
    photos.mkdir(parents=True)
    Image.fromarray(np.full((120, 100, 3), 90, np.uint8)).save(photos / "0001.jpg")
    (base / "empty-token.txt").write_text("\n")
    return {"SMALL": str(synth_root), "PACK": str(pack), "PHOTOS": str(photos.parent), "BASE": str(base),
            "EMPTY_TOKEN": str(base / "empty-token.txt")}


# (id, argv with {SMALL} {PACK} {PHOTOS} {BASE} {EMPTY_TOKEN} {OUT}, substrings the one error line must hold:
#  the setting at fault and its fix)
TINY = ["--preset", "tiny", "--output-dir", "{OUT}"]
CASES = [
    ("data-stats-filter", ["data", "stats", "{SMALL}", "--min-images", "75"],
     ["min_images_per_identity=75", "--min-images 2"]),
    ("data-stats-pack-file", ["data", "stats", "{PACK}/train.rec"],
     ["train.rec", "give the folder that holds train.rec and train.idx: {PACK}"]),
    ("data-unpack-folder", ["data", "unpack", "{SMALL}", "{OUT}"], ["is not a pack", "fr train --data {SMALL}"]),
    ("data-pack-filter", ["data", "pack", "{SMALL}", "{OUT}", "--min-images", "75"], ["--min-images 2"]),
    ("data-synth-count", ["data", "synth", "{OUT}", "--identities", "0"], ["identities >= 1"]),
    ("align-missing", ["align", "{BASE}/nowhere", "{OUT}"], ["{BASE}/nowhere", "does not exist"]),
    ("align-pack", ["align", "{PACK}", "{OUT}"], ["RecordIO pack", "fr train --data {PACK}", "fr data unpack {PACK}"]),
    ("align-batch", ["align", "{PHOTOS}", "{OUT}", "--batch-size", "0"], ["--batch-size must be >= 1"]),
    ("train-casia-filter-on-small-folder", ["train", "--experiment", "ce-efficientnet", "--data", "{SMALL}",
                                            "--output-dir", "{OUT}"],
     ["min_images_per_identity=75", "CASIA-WebFace", "--preset small", "--set data.min_images_per_identity=2"]),
    ("train-filter", ["train", "--experiment", "ce-efficientnet", "--data", "{SMALL}", *TINY,
                      "--set", "data.min_images_per_identity=75"], ["--set data.min_images_per_identity=2"]),
    ("train-pk-batch", ["train", "--experiment", "triplet-efficientnet", "--data", "{SMALL}", *TINY,
                        "--set", "data.batch_size=200"], ["data.samples_per_class", "--set data.batch_size=52"]),
    ("train-backbone-min-size", ["train", "--experiment", "ce-inceptionresnetv1-1292", "--data", "{SMALL}", *TINY,
                                 "--set", "data.image_size=64"], ["at least 80 px", "--set data.image_size=80"]),
    ("train-zero-size", ["train", "--experiment", "ce-efficientnet", "--data", "{SMALL}", *TINY,
                         "--set", "data.image_size=0"], ["image_size", "--set data.image_size=112"]),
    ("train-zero-batch", ["train", "--experiment", "ce-efficientnet", "--data", "{SMALL}", *TINY,
                          "--set", "data.batch_size=0"], ["batch_size", "--set data.batch_size=32"]),
    ("train-open-set", ["train", "--experiment", "ce-efficientnet", "--data", "{SMALL}", *TINY,
                        "--set", "data.max_identities=1"], ["eval_identity_fraction", "--set data.eval_identity_fraction=0"]),
    ("train-unknown-key", ["train", "--experiment", "ce-efficientnet", "--data", "{SMALL}", *TINY,
                           "--set", "nosuch.key=1"], ["nosuch.key", "ExperimentConfig has"]),
    ("train-bad-value", ["train", "--experiment", "ce-efficientnet", "--data", "{SMALL}", *TINY,
                         "--set", "data.image_size=big"], ["data.image_size", "expects int"]),
    ("train-pack-file", ["train", "--experiment", "ce-efficientnet", "--data", "{PACK}/train.rec", *TINY],
     ["--data {PACK}"]),
    ("train-missing-root", ["train", "--experiment", "ce-efficientnet", "--data", "{BASE}/nowhere", *TINY],
     ["{BASE}/nowhere", "does not exist"]),
    ("eval-backbone-min-size", ["eval", "--experiments", "random-inception_resnet_v1@64", "--data", "{SMALL}",
                                "--out", "{OUT}"], ["at least 80 px", "random-inception_resnet_v1@80"]),
    ("eval-unknown-model", ["eval", "--experiments", "nosuch", "--data", "{SMALL}", "--out", "{OUT}"],
     ["unknown embedder 'nosuch'", "choose one of"]),
    ("eval-fprs", ["eval", "--experiments", "random-resnet10t", "--data", "{SMALL}", "--out", "{OUT}",
                   "--fprs", "abc"], ["--fprs must be comma-separated numbers"]),
    ("eval-pairs-missing", ["eval", "--experiments", "random-resnet10t", "--pairs", "{BASE}/pairs.txt",
                            "--data", "{SMALL}", "--out", "{OUT}"], ["pairs file not found", "{BASE}/pairs.txt"]),
    ("compare-missing-photo", ["compare", "{BASE}/a.jpg", "{BASE}/b.jpg", "--checkpoint", "{BASE}/none.pt"],
     ["{BASE}/a.jpg does not exist"]),
    ("compare-missing-checkpoint", ["compare", "{PHOTOS}/alice/0001.jpg", "{PHOTOS}/alice/0001.jpg",
                                    "--checkpoint", "{BASE}/none.pt"], ["checkpoint {BASE}/none.pt does not exist"]),
    ("recognize-no-gallery", ["recognize", "--source", "{PHOTOS}", "--checkpoint", "{BASE}/none.pt"],
     ["--people-faces DIR", "--db"]),
    ("recognize-missing-source", ["recognize", "--source", "{BASE}/clip.mp4", "--checkpoint", "{BASE}/none.pt",
                                  "--people-faces", "{SMALL}"], ["{BASE}/clip.mp4 does not exist"]),
    ("serve-no-token", ["serve", "--checkpoint", "{BASE}/none.pt", "--db", "{OUT}/g.sqlite"],
     ["$FR_API_TOKEN", "--token-file"]),
    ("serve-empty-read-token", ["serve", "--checkpoint", "{BASE}/none.pt", "--db", "{OUT}/g.sqlite",
                                "--token-file", "{BASE}/../errors-token.txt", "--read-token-file", "{EMPTY_TOKEN}"],
     ["--read-token-file {EMPTY_TOKEN} is empty"]),
    ("serve-limits", ["serve", "--checkpoint", "{BASE}/none.pt", "--db", "{OUT}/g.sqlite",
                      "--token-file", "{BASE}/../errors-token.txt", "--max-image-side", "0"],
     ["--max-image-side must be positive"]),
    ("recipe-budget", ["recipe", "{PHOTOS}", "--out", "{OUT}"], ["--minutes", "--epochs"]),
    ("recipe-pack", ["recipe", "{PACK}", "--out", "{OUT}", "--epochs", "1"],
     ["RecordIO pack", "fr recipe DIR --already-aligned"]),
    ("recipe-filter", ["recipe", "{SMALL}", "--already-aligned", "--out", "{OUT}", "--epochs", "1",
                       "--experiments", "ce-efficientnet", "--set", "data.min_images_per_identity=75"],
     ["--set data.min_images_per_identity=2"]),
    ("demo-casia-filter", ["demo", "--data", "{SMALL}", "--preset", "full", "--experiments", "ce-efficientnet",
                           "--device", "cpu", "--out", "{OUT}/id_rate", "--runs", "{OUT}/runs"],
     ["CASIA-WebFace", "--preset demo", "--set data.min_images_per_identity=2"]),
    ("demo-unknown-experiment", ["demo", "--experiments", "nosuch", "--out", "{OUT}/id_rate", "--runs",
                                 "{OUT}/runs"], ["unknown experiment 'nosuch'", "choose one of"]),
]
if not torch.cuda.is_available():
    CASES.append(("train-no-cuda", ["train", "--experiment", "ce-efficientnet", "--data", "{SMALL}", *TINY,
                                    "--device", "cuda"], ["--device cuda", "use --device cpu"]))


def _fill(items, paths, out):
    return [s.format(**paths, OUT=out) for s in items]


@pytest.fixture(autouse=True)
def _write_token(paths, monkeypatch):
    (Path(paths["BASE"]).parent / "errors-token.txt").write_text("a-write-token-0123456789\n")
    monkeypatch.delenv("FR_API_TOKEN", raising=False)
    monkeypatch.delenv("FR_API_READ_TOKEN", raising=False)
    monkeypatch.setenv("FR_CACHE_DIR", str(Path(paths["BASE"]) / "cache"))


def _check(code: int, out: str, err: str, expected: list[str], argv) -> None:
    assert "Traceback" not in out + err, (argv, err[-2000:])
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 2, (argv, code, err[-2000:])
    assert len(errors) == 1 and lines[-1] == errors[0], (argv, lines[-5:])
    for text in expected:
        assert text in errors[0], (argv, text, errors[0])


@pytest.mark.parametrize("argv,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_invocation_exits_2_with_one_line_naming_the_fix(argv, expected, paths, tmp_path, capsys):
    argv, expected = _fill(argv, paths, str(tmp_path / "out")), _fill(expected, paths, str(tmp_path / "out"))
    code = main(argv)
    out, err = capsys.readouterr()
    _check(code, out, err, expected, argv)


@pytest.mark.parametrize("case", ["train-casia-filter-on-small-folder", "align-pack", "serve-no-token"])
def test_no_traceback_reaches_the_terminal(case, paths, tmp_path):
    """The same invocations as a user runs them: `python -m fr_lib ...` in a fresh process."""
    _, argv, expected = next(c for c in CASES if c[0] == case)
    argv, expected = _fill(argv, paths, str(tmp_path / "out")), _fill(expected, paths, str(tmp_path / "out"))
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("FR_API")}
    proc = subprocess.run([sys.executable, "-m", "fr_lib", *argv], cwd=REPO, capture_output=True, text=True,
                          env={**env, "OMP_NUM_THREADS": "1"}, timeout=300)
    _check(proc.returncode, proc.stdout, proc.stderr, expected, argv)


def test_with_fix_leaves_unknown_errors_alone_and_joins_lines():
    from fr_lib.cli.fixes import with_fix

    assert with_fix(ValueError("something else\n  entirely"), "train") == "something else entirely"
    assert with_fix(KeyError("unknown experiment 'x'"), "demo") == "unknown experiment 'x'"
    msg = "no usable images under /d (3 identities below min_images_per_identity=75)"
    assert with_fix(ValueError(msg), "train", "full").endswith("--preset small or --set data.min_images_per_identity=2")
    assert with_fix(ValueError(msg), "train", "small").endswith("lower it: --set data.min_images_per_identity=2")
    assert with_fix(ValueError(msg), "data stats").endswith("--min-images 2")
    # only reachable under DDP (one process pads a short epoch): data.batch_size is per process
    ddp = "no full training batch: 10 images, batch_size 16 x 2 process(es)"
    assert with_fix(ValueError(ddp), "train").endswith("--set data.batch_size=5")
