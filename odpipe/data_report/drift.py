"""Drift: this data against the data that trained the model in service (its `data_stats.json`).

Compared on the whole labels CSV ("all") of each:
- classes added (warning: the model in service never saw them) and missing (error: a class that
  vanished from the export is usually an accident, and the next model would lose it);
- class shares (objects of the class / all objects) that moved by more than `share_threshold`
  (absolute, default 0.10 = ten percentage points);
- the box-size distribution at the input size: the total variation distance between the two
  histograms over `stats.SIZE_EDGES` (half the sum of the absolute differences of the bin shares:
  the share of boxes that would have to change bin; 0 = same, 1 = disjoint), warned above
  `size_threshold` (default 0.2);
- the image count: a drop of more than `shrink_threshold` (default 20%) is a warning.
"""

from __future__ import annotations

import json

import numpy as np

from odpipe import storage
from odpipe.data_report.checks import anomaly
from odpipe.errors import UserError, first_line


def load_stats(path: str) -> dict:
    """A data_stats.json (local or gs://); a UserError when it is missing or not one."""
    try:
        stats = json.loads(storage.read_text(str(path)))
    except FileNotFoundError:
        raise UserError(f"{path}: previous data_stats.json not found; check --previous") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a data_stats.json ({first_line(err, 80)}); pass the file "
                        "`odpipe data-report` wrote") from None
    if not isinstance(stats, dict) or "all" not in stats.get("splits", {}):
        raise UserError(f"{path}: not a data_stats.json (no splits.all); pass the file `odpipe data-report` wrote")
    return stats


def total_variation(a, b) -> float:
    """Half the L1 distance between two histograms, each normalised to shares; 0 when either is empty."""
    p, q = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if p.sum() == 0 or q.sum() == 0 or p.shape != q.shape:
        return 0.0
    return round(float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum()), 4)


def _class_rows(now: dict, before: dict) -> list[dict]:
    rows = []
    for cls in sorted(set(now["classes"]) | set(before["classes"])):
        n, b = now["classes"].get(cls), before["classes"].get(cls)
        rows.append({
            "class": cls,
            "objects_before": b["objects"] if b else 0, "objects_now": n["objects"] if n else 0,
            "share_before": b["share"] if b else 0.0, "share_now": n["share"] if n else 0.0,
            "median_size_before": (b.get("size_at_input") or {}).get("median") if b else None,
            "median_size_now": (n.get("size_at_input") or {}).get("median") if n else None,
        })
    return rows


def compare(current: dict, previous: dict, share_threshold: float = 0.10, size_threshold: float = 0.2,
            shrink_threshold: float = 0.2) -> tuple[dict, list[dict]]:
    """(the drift section of data_stats.json, its anomalies)."""
    now, before = current["splits"]["all"], previous["splits"]["all"]
    added = sorted(set(now["classes"]) - set(before["classes"]))
    missing = sorted(set(before["classes"]) - set(now["classes"]))
    rows = _class_rows(now, before)
    moved = [r for r in rows if r["class"] not in added + missing
             and abs(r["share_now"] - r["share_before"]) > share_threshold]
    distance = total_variation(now["size_histogram"], before["size_histogram"])
    change = (now["images"] - before["images"]) / before["images"] if before["images"] else 0.0
    same_size = current["model"]["image_size"] == previous.get("model", {}).get("image_size")
    drift = {
        "previous": previous.get("source", {}), "classes_added": added, "classes_missing": missing,
        "classes": rows, "shares_moved": [r["class"] for r in moved], "share_threshold": share_threshold,
        "size_distance": distance, "size_distance_kind": "total variation of the box-size histogram at the input size",
        "size_threshold": size_threshold, "same_input_size": same_size,
        "images_before": before["images"], "images_now": now["images"], "images_change": round(change, 4),
        "objects_before": before["objects"], "objects_now": now["objects"],
        "size_histogram_before": before["size_histogram"], "size_histogram_now": now["size_histogram"],
    }
    out = [anomaly("error", "drift_class_missing", f"class {c!r} trained the model in service "
                   f"({before['classes'][c]['objects']} objects) and is missing from this data: check the export", c)
           for c in missing]
    out += [anomaly("warning", "drift_class_added", f"class {c!r} is new ({now['classes'][c]['objects']} objects): "
                    "the model in service never saw it", c) for c in added]
    out += [anomaly("warning", "drift_class_share", f"class {r['class']!r} moved from {100 * r['share_before']:.0f}% "
                    f"to {100 * r['share_now']:.0f}% of the objects (more than {100 * share_threshold:.0f} points)",
                    r["class"]) for r in moved]
    if distance > size_threshold:
        out.append(anomaly("warning", "drift_box_sizes", f"the box sizes moved: total variation distance {distance:.2f} "
                           f"(above {size_threshold}) between the size histograms at the input size"
                           + ("" if same_size else " (the input size changed too)")))
    if change < -shrink_threshold:
        out.append(anomaly("warning", "drift_images", f"{before['images']} -> {now['images']} images "
                           f"({100 * change:.0f}%): is part of the export missing?"))
    return drift, out
