"""Checks with a verdict: each returns anomalies {"severity", "check", "class", "message"}, with
"error" for data a training run should not start on and "warning" for what a person should look at.
Messages are plain language: what is wrong, how much, and what to do."""

from __future__ import annotations

import dataclasses
import math
import re

from odpipe.data_report.geometry import Geometry
from odpipe.data_report.stats import EXTREME_ASPECT
from odpipe.train.input_size import size_multiple


@dataclasses.dataclass(frozen=True)
class Thresholds:
    min_eval_objects: int = 10  # fewer eval objects of a class: its AP is noise
    small_warning: float = 0.10  # share of a class's boxes no anchor can match: warning from here
    small_error: float = 0.50  # ... error from here
    extreme_aspect_share: float = 0.05  # share of a class's boxes longer than EXTREME_ASPECT:1
    large_image_factor: float = 4.0  # median long side over the input size


def anomaly(severity: str, check: str, message: str, cls: str | None = None) -> dict:
    return {"severity": severity, "check": check, "class": cls, "message": message}


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def check_splits(splits: dict, t: Thresholds) -> list[dict]:
    """Classes absent from a split; classes with too few eval objects to measure."""
    out = []
    if "eval" not in splits:
        return out
    every = set(splits["all"]["classes"])
    for side in ("train", "eval"):
        for cls in sorted(every - set(splits[side]["classes"])):
            why = "the model never learns it" if side == "train" else "its AP cannot be measured"
            out.append(anomaly("error", "class_missing_from_split", f"class {cls!r} has no object in the {side} "
                               f"split: {why}; label more images of it, then split again", cls))
    for cls, c in sorted(splits["eval"]["classes"].items()):
        if c["objects"] < t.min_eval_objects:
            out.append(anomaly("warning", "few_eval_objects", f"class {cls!r} has {c['objects']} object(s) in the eval "
                               f"split (fewer than {t.min_eval_objects}): its AP will be noise; label more of it", cls))
    return out


def _suggested_size(geometry: Geometry, p5: float) -> int:
    """The input size (a multiple of the model's 2**max_level, as training needs) at which a box of `p5` px at
    the current size is matchable."""
    step = size_multiple(geometry)  # reads max_level, which Geometry carries as the model config does
    need = geometry.image_size * geometry.smallest_matchable() / max(p5, 0.1)
    return int(min(2048 // step * step, step * math.ceil(need / step)))


def check_box_sizes(stats: dict, geometry: Geometry, t: Thresholds) -> list[dict]:
    """Per class: the share of boxes that no anchor can match at the input size."""
    out = []
    for cls, c in sorted(stats["classes"].items()):
        share = c["unmatchable_share"]
        if share < t.small_warning:
            continue
        size = _suggested_size(geometry, c["size_at_input"]["p5"])
        out.append(anomaly(
            "error" if share >= t.small_error else "warning", "small_boxes",
            f"{_pct(share)} of the {cls!r} boxes ({c['unmatchable']} of {c['objects']}) are too small for "
            f"{geometry.model} at {geometry.image_size} px: no anchor overlaps them with IoU >= "
            f"{geometry.match_threshold} (smallest anchor {geometry.smallest_anchor():.0f} px, median {cls!r} box "
            f"{c['size_at_input']['median']:.0f} px at that size), so the model cannot learn them; train at "
            f"--image-size {size} or larger, or crop/tile the images", cls))
    return out


def check_aspect(stats: dict, geometry: Geometry, t: Thresholds) -> list[dict]:
    out = []
    ratios = ", ".join(f"{a:g}" for a in geometry.aspect_ratios)
    for cls, c in sorted(stats["classes"].items()):
        if c["objects"] and c["extreme_aspect"] / c["objects"] >= t.extreme_aspect_share:
            out.append(anomaly("warning", "extreme_aspect", f"{c['extreme_aspect']} of the {cls!r} boxes "
                               f"({_pct(c['extreme_aspect'] / c['objects'])}) are longer than {EXTREME_ASPECT:g}:1; the "
                               f"anchors' aspect ratios are {ratios}: check those labels, or add wider anchor ratios", cls))
    return out


def check_image_size(stats: dict, geometry: Geometry, t: Thresholds) -> list[dict]:
    side = stats["image_long_side"]
    if not side or side["median"] <= t.large_image_factor * geometry.image_size:
        return []
    factor = side["median"] / geometry.image_size
    return [anomaly("warning", "large_images", f"the images are much larger than the input size (median long side "
                    f"{side['median']:.0f} px, shrunk {factor:.1f}x to {geometry.image_size} px): objects under "
                    f"{factor * geometry.smallest_matchable():.0f} px in the original vanish; train at a larger "
                    "--image-size or tile the images")]


def check_crowded(stats: dict, geometry: Geometry) -> list[dict]:
    most = (stats["objects_per_image"] or {}).get("max", 0)
    if most <= geometry.max_detections:
        return []
    return [anomaly("warning", "crowded_images", f"an image holds {most} objects, more than the {geometry.max_detections} "
                    f"detections {geometry.model} outputs per image: recall on such images is capped; raise "
                    "task.model.detection_generator.max_num_detections (train --config) or tile the images")]


def _normal(name: str) -> str:
    return re.sub(r"[\s_\-.]+", " ", name.casefold()).strip()


def _one_edit(a: str, b: str) -> bool:
    """True when b is a with one character inserted, deleted or replaced."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b)) == 1
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def check_labels(stats: dict) -> list[dict]:
    """Class names that differ only in case, spaces or separators (error) or by one letter (warning)."""
    names = sorted(stats["classes"])
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if _normal(a) == _normal(b):
                out.append(anomaly("error", "similar_labels", f"labels {a!r} and {b!r} differ only in case, spaces or "
                                   "separators: they train as two classes; rename one in the annotations", b))
            elif min(len(a), len(b)) >= 5 and _one_edit(_normal(a), _normal(b)):
                out.append(anomaly("warning", "similar_labels", f"labels {a!r} and {b!r} differ by one letter: a typo? "
                                   "If so, rename one in the annotations", b))
    return out


def check_images(summary: dict, side_of: dict[str, str]) -> list[dict]:
    """Missing, unreadable, damaged or resized images; duplicates (across splits: errors)."""
    out = []
    for key, what in (("missing", "are missing"), ("unreadable", "cannot be read"), ("damaged", "are damaged"),
                      ("size_mismatch", "have another size than the CSV says (boxes would be misplaced)")):
        items = summary[key]
        if items:
            first = items[0] if isinstance(items[0], str) else items[0]["file"]
            out.append(anomaly("error", f"images_{key}", f"{len(items)} image(s) {what}, e.g. {first}; fix them or "
                               "regenerate the CSV with `odpipe csv`"))
    if summary["exif_rotated"]:
        out.append(anomaly("warning", "exif_rotated", f"{len(summary['exif_rotated'])} JPEG(s) carry an EXIF rotation "
                           f"(e.g. {summary['exif_rotated'][0]}): boxes must be on the stored pixels, as labelImg "
                           "draws them; check a few in the gallery"))
    for key, kind in (("duplicates", "identical"), ("near_duplicates", "near-identical")):
        crossing = [g for g in summary[key] if len({side_of.get(f) for f in g} - {None}) > 1]
        if crossing:
            out.append(anomaly("error" if key == "duplicates" else "warning", f"{key}_across_splits",
                               f"{len(crossing)} group(s) of {kind} images sit in both train and eval (e.g. "
                               f"{', '.join(crossing[0][:3])}): eval scores are inflated; split again with "
                               "--images-dir, or remove the copies"))
        if len(summary[key]) > len(crossing):
            out.append(anomaly("warning", key, f"{len(summary[key]) - len(crossing)} group(s) of {kind} images "
                               f"(e.g. {', '.join(summary[key][0][:3])}): they count twice; remove the copies"))
    return out


def run_checks(splits: dict, geometry: Geometry, image_summary: dict | None, side_of: dict[str, str],
               t: Thresholds = Thresholds()) -> list[dict]:
    """Every check on the statistics; errors first."""
    whole = splits["all"]
    out = []
    if not whole["objects"]:
        out.append(anomaly("error", "no_objects", "the labels CSV holds no object; annotate images first"))
    out += check_splits(splits, t) + check_box_sizes(whole, geometry, t) + check_aspect(whole, geometry, t)
    out += check_image_size(whole, geometry, t) + check_crowded(whole, geometry) + check_labels(whole)
    if image_summary is not None:
        out += check_images(image_summary, side_of)
    return sorted(out, key=lambda a: a["severity"] != "error")
