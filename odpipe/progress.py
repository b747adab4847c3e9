"""Progress of long stages on stderr: a tqdm bar on a terminal, plain lines in a log.

A pipeline step's stderr is a log (Cloud Logging, the Kubeflow UI, a redirected run): there a bar's
carriage returns are noise, and a stage that prints nothing until it ends looks hung. So off a
terminal a stage writes one line every `LINE_INTERVAL` seconds or `LINE_STEP` of the total,
whichever comes first (never two within `LINE_GAP` seconds), and one at the end; a stage done
within `LINE_GAP` seconds writes none:

    evaluate: 1200/4000 img (30%), 41.5 img/s, ETA 1m07s
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

# Imported inside functions: tqdm only when a bar is drawn on a terminal.

LINE_INTERVAL = 30.0  # seconds between lines, at most
LINE_STEP = 0.10  # or a line every 10 % of the total
LINE_GAP = 2.0  # but never two lines within this many seconds: a quick stage prints none


def duration(seconds: float) -> str:
    """12s, 3m05s, 2h07m."""
    seconds = int(round(max(seconds, 0)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class LineProgress:
    """tqdm's interface (`update`, `close`, a context manager) writing plain progress lines."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream or sys.stderr
        self.clock, self.interval, self.gap = clock, LINE_INTERVAL, LINE_GAP
        self.step = max(1, int(total * LINE_STEP)) if total else None
        self.n = 0
        self.start = self.last_time = clock()
        self.last_n = 0
        self.closed = False

    def line(self) -> str:
        elapsed = self.clock() - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        if not self.total:
            return f"{self.desc}: {self.n} {self.unit}, {rate:.1f} {self.unit}/s, {duration(elapsed)} so far"
        eta = duration((self.total - self.n) / rate) if rate > 0 else "?"
        return (f"{self.desc}: {self.n}/{self.total} {self.unit} ({100 * self.n // self.total}%), "
                f"{rate:.1f} {self.unit}/s, ETA {eta}")

    def _emit(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self.last_time, self.last_n = self.clock(), self.n

    def update(self, n: int = 1) -> None:
        self.n += n
        since = self.clock() - self.last_time
        due = since >= self.interval or (self.step and self.n - self.last_n >= self.step and since >= self.gap)
        if due and not (self.total and self.n >= self.total):  # the last line is close()'s
            self._emit()

    def close(self) -> None:
        if not self.closed and self.n > self.last_n and self.clock() - self.start >= self.gap:
            self._emit()
        self.closed = True

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(total: int | None, desc: str, unit: str = "it", enabled: bool = True, leave: bool = False):
    """Progress of a stage (a context manager; call `.update(n)`, `.close()`): a tqdm bar when
    stderr is a terminal, plain lines (`LineProgress`) when it is not, nothing unless `enabled`.
    `leave`: the bar's last state stays on the terminal (the records stage's count and rate)."""
    from tqdm import tqdm

    if enabled and not sys.stderr.isatty():
        return LineProgress(total, desc, unit)
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled, mininterval=0.5, leave=leave)
