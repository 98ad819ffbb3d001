"""Progress that suits where it goes: a live bar on a terminal, plain lines in a log.

A tqdm bar redraws itself with carriage returns; written into a file (DVC's stage log, a CI log,
``nohup``) it becomes one line of thousands of characters. :func:`show_progress` therefore returns

- a live ``tqdm`` bar (``tqdm.auto``: a widget in Jupyter) when stderr is a terminal or a notebook;
- otherwise a :class:`LineProgress`, which writes one plain line every ``interval`` seconds and one
  at the end: ``embed: 1200/5000 text (24%), 35.2 text/s, 1:48 left, shard 2/5``.

``SSAE_PROGRESS=bar`` or ``SSAE_PROGRESS=lines`` forces either (``auto``, the default, decides by
the stream). Both kinds take the arguments and offer the methods the package uses: iteration,
``update``, ``set_postfix``, ``set_postfix_str``, ``close`` and ``with``. :func:`show_message`
prints a
message without breaking a live bar.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from tqdm.auto import tqdm

from ssae_core.errors import InputError

MODE_ENV = "SSAE_PROGRESS"
MODES = ("auto", "bar", "lines")
LINE_INTERVAL_S = 10.0


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (whose stderr is no terminal, but shows widgets)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def live(stream: TextIO | None = None) -> bool:
    """Whether progress on ``stream`` (default stderr) is drawn as a live bar (see the module
    docstring): ``SSAE_PROGRESS`` if set, else whether the stream is a terminal or a notebook."""
    mode = os.environ.get(MODE_ENV, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise InputError(f"{MODE_ENV}={mode!r}: use one of {', '.join(MODES)}")
    if mode != "auto":
        return mode == "bar"
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty()) or _in_notebook()


def _duration(seconds: float) -> str:
    """``1:05:09``, ``5:09`` or ``0:09``."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class LineProgress:
    """Progress as plain lines: one every ``interval`` seconds while work is done, and one when it
    ends (``close``, the end of the iteration or of the ``with`` block). The subset of tqdm's
    interface the package uses."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: float | None = None,
        desc: str = "",
        unit: str,
        initial: float = 0,
        disable: bool = False,
        interval: float = LINE_INTERVAL_S,
        file: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = initial
        self.disable = disable
        self.interval = float(interval)
        self._initial = initial
        self._file = file
        self._clock = clock
        self._start = clock()
        self._last_line = self._start
        self._postfix = ""
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("LineProgress: iterate over a progress made with an iterable")
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        now = self._clock()
        if not self.disable and now - self._last_line >= self.interval:
            self._emit(now)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self._postfix = str(s)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self._postfix = ", ".join(f"{key}={value}" for key, value in items.items())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.disable and self.n != self._initial:
            self._emit(self._clock(), final=True)

    def line(self, now: float, *, final: bool = False) -> str:
        """The line written at time ``now``: done/total, rate, remaining (or total) time."""
        elapsed = max(now - self._start, 0.0)
        done = self.n - self._initial
        rate = done / elapsed if elapsed > 0 else math.nan
        count = f"{self.n:g}/{self.total:g}" if self.total is not None else f"{self.n:g}"
        parts = [f"{self.desc}: {count} {self.unit}" if self.desc else f"{count} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        if math.isfinite(rate):
            parts.append(f"{rate:.3g} {self.unit}/s")
        if final:
            parts.append(f"{_duration(elapsed)} in all")
        elif self.total is not None and math.isfinite(rate) and rate > 0:
            parts.append(f"{_duration(max(self.total - self.n, 0) / rate)} left")
        if self._postfix:
            parts.append(self._postfix)
        return ", ".join(parts)

    def _emit(self, now: float, *, final: bool = False) -> None:
        stream = sys.stderr if self._file is None else self._file
        print(self.line(now, final=final), file=stream, flush=True)
        self._last_line = now


def show_progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: float | None = None,
    desc: str = "",
    unit: str,
    initial: float = 0,
    disable: bool = False,
    interval: float = LINE_INTERVAL_S,
    file: TextIO | None = None,
) -> tqdm | LineProgress:
    """A progress display for ``iterable`` (or for ``total`` units counted with ``update``): a
    live tqdm bar on a terminal, else a :class:`LineProgress` writing a line every ``interval``
    seconds and at the end (see the module docstring). ``unit``: what one count is (``epoch``,
    ``text``, ``batch``...; no default: tqdm's ``it`` says nothing). ``file``: the stream (default
    stderr)."""
    if live(file):
        return tqdm(
            iterable, total=total, desc=desc, unit=unit, initial=initial, disable=disable, file=file
        )
    return LineProgress(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        disable=disable,
        interval=interval,
        file=file,
    )


def show_message(message: str, file: TextIO | None = None) -> None:
    """Print ``message`` on its own line (default stderr) without breaking a live bar."""
    tqdm.write(message, file=sys.stderr if file is None else file)
