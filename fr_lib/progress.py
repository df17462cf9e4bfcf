"""Progress bars fit for terminals, notebooks and log files: the one place fr_lib makes a tqdm bar.

On a terminal (the bar's file, stderr by default, is a TTY) and in Jupyter (tqdm.auto's widget) the bar is tqdm's
own. Anywhere else (output redirected to a file, a pipe, CI, nohup) tqdm's in-place redraws would be written out
one carriage-return frame at a time (ten a second: tens of thousands per long run), so there the bar becomes a
plain line, printed at most every ``LOG_INTERVAL_S`` seconds and not at all for work that ends sooner; the lines
that callers print themselves (per-epoch summaries) are untouched. tqdm's environment variables (read when tqdm
is imported) still apply: ``TQDM_MININTERVAL=2`` prints log lines every 2 s, ``TQDM_DISABLE=1`` turns bars off.
"""
from __future__ import annotations

import os
import sys

LOG_INTERVAL_S = 10.0
"""Seconds between two progress lines in a log file (tqdm's ``mininterval``; its default on a terminal: 0.1)."""


def _is_terminal(file) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def _log_tqdm_class():
    """A tqdm whose every display is one whole line (no carriage return, no cursor movement), built on first use
    so that importing fr_lib does not import tqdm. tqdm has no line mode of its own: ``status_printer`` is its
    documented hook for how a status is written, and the other writes it makes to the file are redraw controls."""
    global _LogTqdm
    if _LogTqdm is None:
        from tqdm.std import tqdm as std_tqdm

        class LogTqdm(std_tqdm):
            _line_n = None  # progress count of the last line written; None: no line yet

            def display(self, msg=None, pos=None):
                if msg is None and self.n == self._line_n:  # e.g. close() right after the 100% line
                    return True
                if msg is None:
                    self._line_n = self.n
                return super().display(msg=msg, pos=pos)

            # tqdm redraws at once on every postfix/description change (a training loop sets the loss each
            # step); in a log those values wait for the next interval's line
            def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
                super().set_postfix(ordered_dict, refresh=False, **kwargs)

            def set_postfix_str(self, s="", refresh=True):
                super().set_postfix_str(s, refresh=False)

            def set_description(self, desc=None, refresh=True):
                super().set_description(desc, refresh=False)

            def set_description_str(self, desc=None, refresh=True):
                super().set_description_str(desc, refresh=False)

            def close(self):
                if self._line_n is not None and hasattr(self, "last_print_t"):
                    # tqdm skips the final display of a bar whose last draw came before ``delay``
                    self.last_print_t = max(self.last_print_t, self.start_t + self.delay)
                super().close()

            @staticmethod
            def status_printer(file):
                def print_status(s):
                    s = s.rstrip()
                    if s:  # an empty status is tqdm clearing the line: nothing to clear in a log
                        file.write_line(s)
                return print_status

        _LogTqdm = LogTqdm
    return _LogTqdm


_LogTqdm = None


class _LineFile:
    """The file of a log-mode bar: only whole status lines reach the real file; tqdm's own writes to it (``\\r``,
    the newline after a closed bar, cursor moves for nested bars) carry nothing a log needs and are dropped."""

    def __init__(self, file):
        self._file = file

    def write_line(self, line: str) -> None:
        self._file.write(line + "\n")
        self._file.flush()

    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        self._file.flush()

    def __getattr__(self, name):  # encoding, isatty, fileno, ... of the real file
        return getattr(self._file, name)


def _is_notebook_class(cls) -> bool:
    return any(c.__module__ == "tqdm.notebook" for c in cls.__mro__)


def progress_bar(iterable=None, **tqdm_kwargs):
    """``tqdm.auto.tqdm(iterable, **tqdm_kwargs)`` on a terminal or in a notebook; in a log file, the same bar as
    one line at most every ``LOG_INTERVAL_S`` s (first after that long: a short loop prints none). Takes every
    tqdm keyword (total, desc, unit, disable, leave, ...); returns the bar (iterate it, or ``update``/``close``
    it, or use it as a context manager)."""
    from tqdm.auto import tqdm as auto_tqdm

    file = tqdm_kwargs.get("file") or sys.stderr
    if _is_notebook_class(auto_tqdm) or _is_terminal(file):
        return auto_tqdm(iterable, **tqdm_kwargs)
    kwargs = dict(tqdm_kwargs, file=_LineFile(file))
    kwargs.setdefault("ascii", True)  # '#' bars: greppable, and safe in a log of any encoding
    interval = float(kwargs.get("mininterval", os.environ.get("TQDM_MININTERVAL", LOG_INTERVAL_S)))
    kwargs["mininterval"] = interval
    if "TQDM_DELAY" not in os.environ:
        kwargs.setdefault("delay", interval)
    # tqdm's monitor thread forces a redraw every maxinterval s (default 10): never more often than mininterval
    kwargs.setdefault("maxinterval", max(10.0, interval))
    return _log_tqdm_class()(iterable, **kwargs)


def progress_write(line: str, file=None) -> None:
    """Print ``line`` (a per-epoch summary, a note) without breaking a terminal bar that is being drawn
    (``tqdm.write``); ``file`` defaults to stdout."""
    from tqdm.auto import tqdm as auto_tqdm

    auto_tqdm.write(line, file=file)
