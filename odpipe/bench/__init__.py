"""Benchmarks (make bench). Targets live here, never in timed tests."""

from __future__ import annotations

import json


def save_json(path: str | None, data) -> None:
    """Write a benchmark's figures to `path` (its --json), when one is given."""
    if path:
        with open(path, "w") as f:
            json.dump(data, f, indent=2, default=float)
