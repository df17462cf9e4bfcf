"""fr_lib.progress: tqdm's bar on a terminal; in a log file, whole lines at most every LOG_INTERVAL_S seconds (a
fake clock drives tqdm here, so nothing depends on the machine's speed); a piped ``fr train`` log stays short."""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tqdm.std

from fr_lib import progress
from fr_lib.progress import LOG_INTERVAL_S, progress_bar, progress_write

REPO = Path(__file__).resolve().parents[1]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    """tqdm's clock, advanced by hand: ``clock.t``, seconds. The monitor thread (real time) is switched off."""
    class Clock:
        t = 1000.0

        def __call__(self):
            return self.t

    c = Clock()
    monkeypatch.setattr(tqdm.std, "time", c)
    monkeypatch.setattr(tqdm.std.tqdm, "monitor_interval", 0)
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    monkeypatch.delenv("TQDM_DELAY", raising=False)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    return c


def _run(file, clock, n=1000, step_s=0.1, **kw):
    """n iterations of step_s seconds each on ``clock`` through progress_bar -> what reached ``file``."""
    for _ in progress_bar(range(n), desc="work", file=file, **kw):
        clock.t += step_s
    return file.getvalue()


def test_log_file_gets_one_whole_line_per_interval(clock):
    text = _run(io.StringIO(), clock)  # 100 s of work
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert text.endswith("\n") and all(lines)
    # first line after LOG_INTERVAL_S (no 0% line), then one per interval, the final state once
    assert len(lines) == pytest.approx(100 / LOG_INTERVAL_S, abs=1)
    assert "1000/1000" in lines[-1] and "100%" in lines[-1]
    assert sum("1000/1000" in line for line in lines) == 1
    counts = [int(re.search(r"(\d+)/1000", line).group(1)) for line in lines]
    assert counts == sorted(counts) and counts[0] >= LOG_INTERVAL_S / 0.1 - 1
    assert all(re.match(r"work: +\d+%\|[# 0-9]*\| \d+/1000", line) for line in lines), lines[:2]


def test_terminal_keeps_tqdm_redrawn_bar(clock):
    """The same work on a TTY: tqdm's own bar, redrawn in place (carriage returns), ten times a second."""
    text = _run(_Terminal(), clock)
    frames = [f for f in text.split("\r") if f.strip()]
    assert len(frames) > 500 and "\n" not in text.rstrip("\n")
    assert "1000/1000" in frames[-1]


def test_short_work_and_disabled_bars_print_nothing(clock):
    assert _run(io.StringIO(), clock, n=50, step_s=0.1) == ""  # 5 s < LOG_INTERVAL_S
    assert _run(io.StringIO(), clock, disable=True) == ""
    assert _run(_Terminal(), clock, disable=True) == ""


def test_tqdm_mininterval_variable_sets_the_log_interval(clock, monkeypatch):
    monkeypatch.setenv("TQDM_MININTERVAL", "1")
    lines = _run(io.StringIO(), clock).splitlines()  # 100 s, a line a second
    assert 80 <= len(lines) <= 100  # at most one a second (tqdm's adaptive miniters may skip a few)


def test_manual_bar_and_progress_write(clock, capsys):
    log = io.StringIO()
    with progress_bar(total=300, desc="align", unit="img", file=log) as bar:
        for _ in range(30):
            clock.t += 2.0
            bar.update(10)
            progress_write(f"note {bar.n}")
    lines = log.getvalue().splitlines()
    assert len(lines) == pytest.approx(60 / LOG_INTERVAL_S, abs=1) and "300/300" in lines[-1]
    out = capsys.readouterr().out.splitlines()
    assert out == [f"note {n}" for n in range(10, 301, 10)]  # written whole, to stdout, nothing interleaved


def test_notebook_bar_is_left_alone(monkeypatch):
    """In Jupyter, tqdm.auto is the widget bar: progress_bar returns it as is, whatever sys.stderr is."""
    pytest.importorskip("ipywidgets")
    import tqdm.auto
    import tqdm.notebook

    made = []

    class FakeNotebookBar(tqdm.notebook.tqdm):
        disable = True  # never drawn, so tqdm's __del__/close have nothing to do

        def __init__(self, *args, **kwargs):
            made.append(kwargs)

    monkeypatch.setattr(tqdm.auto, "tqdm", FakeNotebookBar)
    bar = progress_bar(total=3, desc="x", file=io.StringIO())
    assert isinstance(bar, FakeNotebookBar) and made[0].get("mininterval") is None
    assert progress._is_notebook_class(FakeNotebookBar) and not progress._is_notebook_class(tqdm.std.tqdm)


def test_piped_fr_train_log_is_short_and_keeps_epoch_lines(synth_root, tmp_path):
    """`fr train ... > log 2>&1`: no carriage-return frames, bar lines at the interval, every epoch's summary line.
    TQDM_MININTERVAL=0.2 (instead of 10 s) makes this short run print bar lines at all (an epoch's training loop
    takes ~0.5 s on an idle 2-core machine); the bound on the log's length follows from the interval and the run's
    wall time (bars run one after another: at most one line per interval, plus each bar's first and last line)."""
    epochs = 2
    log = tmp_path / "train.log"
    cmd = [sys.executable, "-m", "fr_lib", "train", "--experiment", "ce-efficientnet", "--preset", "tiny",
           "--data", str(synth_root), "--epochs", str(epochs), "--output-dir", str(tmp_path / "run"),
           "--set", "data.image_size=32", "--set", "model.backbone=resnet10t", "--set", "model.embedding_size=16",
           "--set", "data.batch_size=8", "--set", "data.max_images_per_identity=10"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    interval = 0.2
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=REPO, env={**env, "OMP_NUM_THREADS": "1", "TQDM_MININTERVAL": str(interval)},
                              stdout=f, stderr=subprocess.STDOUT, timeout=300)
    wall = time.perf_counter() - t0
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) <= wall / interval + 10 * epochs + 20, (wall, lines[:20])
    for epoch in range(1, epochs + 1):
        assert sum(line.startswith(f"epoch {epoch}/{epochs}: train loss") for line in lines) == 1, text
        bar_lines = [line for line in lines if re.match(rf"epoch {epoch}/{epochs}: +\d+%\|", line)]
        assert bar_lines and re.search(r"loss=\d", bar_lines[-1]), text
    assert any(line.startswith("done: ") for line in lines)


def test_postfix_updates_wait_for_the_next_line(clock):
    """A training loop sets the loss every step: in a log that is no extra line, and each line shows the count
    reached and the latest postfix; the final line is written when the bar closes."""
    log = io.StringIO()
    bar = progress_bar(range(200), desc="epoch 1/1", file=log)
    for i in bar:
        clock.t += 0.1
        bar.set_postfix(loss=f"{i:.4f}")
    lines = log.getvalue().splitlines()
    assert len(lines) == pytest.approx(20 / LOG_INTERVAL_S, abs=1), lines
    assert "200/200" in lines[-1] and "loss=199.0000" in lines[-1]
    for line in lines:
        n = int(re.search(r"(\d+)/200", line).group(1))
        assert f"loss={n - 1}.0000" in line or f"loss={n}.0000" in line, line


def test_fr_lib_makes_every_bar_through_progress_bar():
    """One owner: no module of fr_lib but fr_lib/progress.py imports tqdm (a raw tqdm floods log files)."""
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "fr_lib").rglob("*.py")
                 if p.name != "progress.py" and re.search(r"^\s*(from tqdm|import tqdm)", p.read_text(), re.M)]
    assert offenders == []
