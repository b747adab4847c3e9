"""`make bench`: every benchmark, one after another, each printing its figures and ratios.

    python -m odpipe.bench                # all: records, train (input), steps, train_quality, minutes, predict, tflite, serve
    python -m odpipe.bench records --images 1000
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("records", "train", "steps", "train_quality", "minutes", "predict", "tflite", "serve")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = [argv.pop(0)] if argv and argv[0] in BENCHMARKS else list(BENCHMARKS)
    status = 0
    for name in names:
        print(f"=== benchmark: {name} ===", flush=True)
        module = importlib.import_module(f"odpipe.bench.{name}")
        status |= int(module.main(argv if len(names) == 1 else []) or 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
