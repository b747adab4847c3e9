"""Progress bars for long stages: tqdm on stderr, shown only when stderr is a terminal.

Logs (a pipeline step, a redirected run, the tests) get no progress lines; each stage prints its
own summary when it is done.
"""

from __future__ import annotations

import sys


def progress_bar(total: int | None, desc: str, unit: str = "it", enabled: bool = True):
    """A tqdm bar (a context manager; call `.update(n)`), disabled unless `enabled` and stderr is a
    terminal."""
    from tqdm import tqdm

    shown = enabled and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not shown, mininterval=0.5, leave=False)
