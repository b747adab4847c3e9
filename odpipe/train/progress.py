"""What a training run tells the user: one concise line per logging interval, early stopping.

Orbit prints every train/eval summary dict to stdout *and* logs it through absl (so a 2,100-step
run printed ~1,900 lines, each dict twice under the kfp local runner, whose logging handler shows
absl's records). Those dicts are in TensorBoard already (MODEL_DIR/train, MODEL_DIR/validation);
`library_output(verbose=False)` sends Orbit's prints to /dev/null and raises absl's logger to
WARNING while training runs, so the user sees odpipe's own lines only; `--verbose` keeps them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time

import numpy as np


class EarlyStopping:
    """Stop after `patience` evaluations without a better metric (patience 0 = never stop)."""

    def __init__(self, patience: int = 0, min_delta: float = 1e-6):
        self.patience = int(patience)
        self.min_delta = min_delta
        self.best = -math.inf
        self.stale = 0

    def update(self, value: float) -> bool:
        """Record one evaluation; True when training should stop."""
        if math.isfinite(value) and value > self.best + self.min_delta:
            self.best, self.stale = value, 0
        else:
            self.stale += 1
        return bool(self.patience) and self.stale >= self.patience


class Progress:
    """Orbit train action: one line (step, loss, steps/s, images/s, ETA) per logging interval."""

    def __init__(self, global_step, total_steps: int, batch_size: int, echo, every: int = 1):
        self.global_step = global_step
        self.total = total_steps
        self.batch_size = batch_size
        self.echo = echo
        self.every = max(1, int(every))
        self.last_step = int(global_step.numpy())
        self.last_time = time.monotonic()
        self.calls = 0
        self.rates: list[float] = []
        self.losses: list[tuple[int, float]] = []

    def __call__(self, output) -> None:
        step = int(self.global_step.numpy())
        now = time.monotonic()
        rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
        self.last_step, self.last_time = step, now
        self.rates.append(rate)
        loss = float(output.get("total_loss", output.get("training_loss", float("nan"))))
        self.losses.append((step, loss))
        self.calls += 1
        if self.calls % self.every and step < self.total:
            return
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        self.echo(
            f"step {step}/{self.total}  loss {loss:.4f}  {rate:.2f} steps/s  "
            f"{rate * self.batch_size:.1f} images/s  ETA {hms(eta)}"
        )


def hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def scalar_logs(logs: dict) -> dict:
    out = {}
    for k, v in (logs or {}).items():
        try:
            arr = np.asarray(v.numpy() if hasattr(v, "numpy") else v)
        except Exception:  # noqa: BLE001 - non-numeric summaries (images) are skipped
            continue
        if arr.size == 1 and arr.dtype.kind in "fiub":
            out[k] = float(arr.reshape(()))
    return out


@contextlib.contextmanager
def library_output(verbose: bool = False):
    """Inside: Orbit's summary prints and absl INFO records are dropped unless `verbose`."""
    if verbose:
        yield
        return
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.WARNING)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            yield
    finally:
        absl_logger.setLevel(level)
