"""Label statistics from the labels CSV (and its split), per split and per class; pure functions.

Box sizes are given three ways: in pixels of the stored image, relative to the image (the side of
a square with the box's area over the image's), and at the model's input size (the image resized
so that its long side is the input size, as Model Garden's parser does it before padding).
"Size" is always the square root of the area, so one number describes a box.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from odpipe import storage
from odpipe.data_report.geometry import Geometry, best_anchor_iou
from odpipe.errors import UserError
from odpipe.schema import read_labels

SPLITS = ("train", "eval")
# box size at the input size (sqrt of the area, px): the histogram drift compares. Stated, fixed edges.
SIZE_EDGES = [0, 4, 8, 16, 32, 64, 128, 256, 512, 1_000_000]
EXTREME_ASPECT = 6.0  # a box longer than 6:1 either way has an "extreme" aspect ratio


@dataclasses.dataclass
class Labels:
    """One split's rows as arrays (objects only in `cls`/`boxes`; every image in `images`)."""

    images: dict[str, tuple[int, int, int]]  # filename -> (width, height, objects)
    files: np.ndarray  # per object
    cls: np.ndarray
    boxes: np.ndarray  # (N, 4) xmin, ymin, xmax, ymax in stored pixels
    sizes: np.ndarray  # (N, 2) width, height of the object's image


def to_labels(columns: dict[str, list]) -> Labels:
    images: dict[str, list[int]] = {}
    keep = []
    for i, (name, w, h, c) in enumerate(zip(columns["filename"], columns["width"], columns["height"], columns["class"])):
        entry = images.setdefault(name, [w, h, 0])
        if c != "":
            entry[2] += 1
            keep.append(i)
    idx = np.array(keep, dtype=int)
    pick = lambda key: np.asarray(columns[key], dtype=object)[idx] if len(idx) else np.array([], dtype=object)  # noqa: E731
    boxes = np.stack([np.asarray(columns[k], dtype=float)[idx] for k in ("xmin", "ymin", "xmax", "ymax")], axis=1) \
        if len(idx) else np.zeros((0, 4))
    sizes = np.stack([np.asarray(columns[k], dtype=float)[idx] for k in ("width", "height")], axis=1) \
        if len(idx) else np.zeros((0, 2))
    return Labels({k: tuple(v) for k, v in images.items()}, pick("filename").astype(str), pick("class").astype(str),
                  boxes, sizes)


def load_labels(labels_csv: str, splits_dir: str | None = None) -> dict[str, Labels]:
    """{"all": ..., and with `splits_dir` "train" and "eval"} read through odpipe.schema's reader."""
    out = {"all": to_labels(read_labels(str(labels_csv)))}
    if splits_dir:
        for side in SPLITS:
            path = storage.join(str(splits_dir), f"{side}.csv")
            if not storage.exists(path):
                raise UserError(f"{path}: split file not found; --split takes the folder `odpipe split` wrote "
                                "(train.csv, eval.csv)")
            out[side] = to_labels(read_labels(path))
    return out


def _quantiles(values, digits: int = 2) -> dict | None:
    v = np.asarray(values, dtype=float)
    if not v.size:
        return None
    q = np.percentile(v, [5, 50, 95])
    return {"min": round(float(v.min()), digits), "p5": round(float(q[0]), digits),
            "median": round(float(q[1]), digits), "p95": round(float(q[2]), digits), "max": round(float(v.max()), digits)}


@dataclasses.dataclass
class Boxes:
    """Derived per-object measures of one split (same order as Labels.cls)."""

    px: np.ndarray  # sqrt(area) in stored pixels
    rel: np.ndarray  # sqrt(area / image area)
    input_px: np.ndarray  # sqrt(area) at the input size
    aspect: np.ndarray  # width / height
    centre: np.ndarray  # (N, 2) centre, relative to the image
    matchable: np.ndarray  # bool: an anchor can match it (IoU >= match_threshold)


def measure(labels: Labels, geometry: Geometry) -> Boxes:
    b, s = labels.boxes, labels.sizes
    w = np.maximum(b[:, 2] - b[:, 0], 0.0)
    h = np.maximum(b[:, 3] - b[:, 1], 0.0)
    scale = geometry.image_size / np.maximum(s.max(axis=1), 1.0) if len(s) else np.zeros(0)
    iou = best_anchor_iou(w * scale, h * scale, geometry.anchors())
    area = np.maximum(s[:, 0] * s[:, 1], 1.0) if len(s) else np.zeros(0)
    centre = np.stack([(b[:, 0] + b[:, 2]) / 2 / np.maximum(s[:, 0], 1), (b[:, 1] + b[:, 3]) / 2 / np.maximum(s[:, 1], 1)],
                      axis=1) if len(s) else np.zeros((0, 2))
    return Boxes(px=np.sqrt(w * h), rel=np.sqrt(w * h / area), input_px=np.sqrt(w * h) * scale,
                 aspect=np.divide(w, h, out=np.full_like(w, np.inf), where=h > 0), centre=centre,
                 matchable=iou >= geometry.match_threshold)


def _class_stats(labels: Labels, boxes: Boxes, mask: np.ndarray, total: int) -> dict:
    aspect = boxes.aspect[mask]
    stretch = np.maximum(aspect, np.divide(1.0, aspect, out=np.full_like(aspect, np.inf), where=aspect > 0))
    n = int(mask.sum())
    return {
        "images": len(set(labels.files[mask])),
        "objects": n,
        "share": round(n / total, 4) if total else 0.0,
        "size_px": _quantiles(boxes.px[mask]),
        "size_relative": _quantiles(boxes.rel[mask], 4),
        "size_at_input": _quantiles(boxes.input_px[mask]),
        "unmatchable": int((~boxes.matchable[mask]).sum()),
        "unmatchable_share": round(float((~boxes.matchable[mask]).mean()), 4) if n else 0.0,
        "aspect": _quantiles(aspect[np.isfinite(aspect)]),
        "extreme_aspect": int((stretch > EXTREME_ASPECT).sum()),
    }


def split_stats(labels: Labels, geometry: Geometry) -> dict:
    """The statistics of one split; also returns the per-object measures under "_boxes" (not saved)."""
    boxes = measure(labels, geometry)
    per_image = np.array([v[2] for v in labels.images.values()], dtype=int)
    total = len(labels.cls)
    classes = sorted({str(c) for c in labels.cls})
    long_side = np.array([max(v[0], v[1]) for v in labels.images.values()], dtype=float)
    cx, cy = (boxes.centre[:, 0], boxes.centre[:, 1]) if total else (np.zeros(0), np.zeros(0))
    grid, _, _ = np.histogram2d(np.clip(cy, 0, 0.999), np.clip(cx, 0, 0.999), bins=3, range=[[0, 1], [0, 1]])
    return {
        "images": len(labels.images),
        "objects": total,
        "empty_images": int((per_image == 0).sum()),
        "objects_per_image": ({"mean": round(float(per_image.mean()), 2), "median": float(np.median(per_image)),
                               "max": int(per_image.max())} if per_image.size else None),
        "image_long_side": _quantiles(long_side),
        "unmatchable": int((~boxes.matchable).sum()),
        "unmatchable_share": round(float((~boxes.matchable).mean()), 4) if total else 0.0,
        "size_histogram": np.histogram(boxes.input_px, bins=SIZE_EDGES)[0].tolist(),
        "centre_grid": (grid / max(total, 1)).round(4).tolist(),  # rows top..bottom, columns left..right
        "classes": {c: _class_stats(labels, boxes, labels.cls == c, total) for c in classes},
        "_boxes": boxes,
    }


def image_sizes(labels: Labels, top: int = 10) -> list[dict]:
    """The most common stored image sizes: [{"width", "height", "images"}]."""
    counts: dict[tuple[int, int], int] = {}
    for w, h, _ in labels.images.values():
        counts[(w, h)] = counts.get((w, h), 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return [{"width": w, "height": h, "images": n} for (w, h), n in ranked]
