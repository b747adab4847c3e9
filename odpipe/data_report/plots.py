"""The data report's plots, as PNG bytes (matplotlib Agg through odpipe.report's figure helpers)."""

from __future__ import annotations

import numpy as np

from odpipe.data_report.geometry import Geometry
from odpipe.data_report.stats import SIZE_EDGES, Boxes, Labels
from odpipe.predict import PALETTE
from odpipe.report import figure, png_bytes


def _colour(i: int) -> tuple[float, ...]:
    return tuple(v / 255 for v in PALETTE[i % len(PALETTE)])


def class_counts_png(splits: dict) -> bytes:
    """Objects per class, one bar per split (train/eval when split, else all)."""
    sides = [s for s in ("train", "eval") if s in splits] or ["all"]
    classes = sorted(splits["all"]["classes"])
    fig = figure(7.0, max(2.5, 0.35 * len(classes) + 1.2))
    ax = fig.add_subplot()
    y = np.arange(len(classes))
    height = 0.8 / len(sides)
    for i, side in enumerate(sides):
        counts = [splits[side]["classes"].get(c, {}).get("objects", 0) for c in classes]
        bars = ax.barh(y + i * height, counts, height=height, label=side, color=_colour(i + 2))
        ax.bar_label(bars, fontsize=7, padding=2)
    ax.set_yticks(y + height * (len(sides) - 1) / 2, labels=classes)
    ax.invert_yaxis()
    ax.set_xlabel("objects")
    ax.set_title("objects per class" + (" and split" if sides != ["all"] else ""))
    ax.legend(fontsize=8)
    return png_bytes(fig)


def box_sizes_png(labels: Labels, boxes: Boxes, geometry: Geometry) -> bytes:
    """Box size (sqrt of the area) at the input size per class, with the smallest matchable size."""
    fig = figure(7.0, 4.0)
    ax = fig.add_subplot()
    sizes = boxes.input_px[boxes.input_px > 0]
    top = max(float(sizes.max()) if sizes.size else 1.0, geometry.image_size)
    bins = np.geomspace(1, top * 1.1, 40)
    for i, cls in enumerate(sorted(set(labels.cls))):
        ax.hist(np.clip(boxes.input_px[labels.cls == cls], 1, None), bins=bins, histtype="step", linewidth=1.5,
                label=cls, color=_colour(i))
    ax.axvline(geometry.smallest_matchable(), color="red", linestyle="--",
               label=f"smallest matchable ({geometry.smallest_matchable():.0f} px)")
    ax.set_xscale("log")
    ax.set_xlabel(f"box size at {geometry.image_size} px input (sqrt of area, px)")
    ax.set_ylabel("boxes")
    ax.set_title(f"box sizes as {geometry.model} sees them")
    ax.legend(fontsize=7)
    return png_bytes(fig)


def centres_png(boxes: Boxes) -> bytes:
    """Where the objects are: a 2-D histogram of box centres in the (normalised) frame."""
    fig = figure(4.2, 3.8)
    ax = fig.add_subplot()
    c = np.clip(boxes.centre, 0, 1) if len(boxes.centre) else np.zeros((0, 2))
    hist = ax.hist2d(c[:, 0], c[:, 1], bins=20, range=[[0, 1], [0, 1]], cmap="Blues")
    fig.colorbar(hist[3], ax=ax, label="boxes")
    ax.set_ylim(1, 0)  # image coordinates: top at the top
    ax.set_xlabel("centre x / width")
    ax.set_ylabel("centre y / height")
    ax.set_title("box centres")
    return png_bytes(fig)


def aspect_png(labels: Labels, boxes: Boxes, geometry: Geometry) -> bytes:
    """Box aspect ratios (width / height, log scale) per class, with the anchors' ratios."""
    fig = figure(7.0, 3.6)
    ax = fig.add_subplot()
    finite = np.isfinite(boxes.aspect) & (boxes.aspect > 0)
    bins = np.geomspace(1 / 16, 16, 41)
    for i, cls in enumerate(sorted(set(labels.cls))):
        ax.hist(np.clip(boxes.aspect[finite & (labels.cls == cls)], 1 / 16, 16), bins=bins, histtype="step",
                linewidth=1.5, label=cls, color=_colour(i))
    for j, ratio in enumerate(geometry.aspect_ratios):
        ax.axvline(ratio, color="grey", linestyle=":", label="anchor ratios" if j == 0 else None)
    ax.set_xscale("log")
    ax.set_xlabel("aspect ratio (width / height)")
    ax.set_ylabel("boxes")
    ax.set_title("box aspect ratios")
    ax.legend(fontsize=7)
    return png_bytes(fig)


def image_sizes_png(labels: Labels, geometry: Geometry) -> bytes:
    """Stored image sizes (width x height), one dot per image, with the input size."""
    fig = figure(4.2, 3.8)
    ax = fig.add_subplot()
    wh = np.array([(w, h) for w, h, _ in labels.images.values()], dtype=float).reshape(-1, 2)
    ax.scatter(wh[:, 0], wh[:, 1], s=8, alpha=0.4)
    ax.axvline(geometry.image_size, color="red", linestyle="--", linewidth=1)
    ax.axhline(geometry.image_size, color="red", linestyle="--", linewidth=1, label=f"input {geometry.image_size} px")
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title("image sizes")
    ax.legend(fontsize=7)
    return png_bytes(fig)


def objects_per_image_png(labels: Labels) -> bytes:
    fig = figure(4.2, 3.0)
    ax = fig.add_subplot()
    counts = np.array([n for _, _, n in labels.images.values()], dtype=int)
    top = int(counts.max()) if counts.size else 0
    ax.hist(counts, bins=np.arange(top + 2) - 0.5)
    ax.set_xlabel("objects in the image")
    ax.set_ylabel("images")
    ax.set_title("objects per image")
    return png_bytes(fig)


def drift_png(drift: dict) -> bytes:
    """Side by side: class shares and box-size histograms, model in service vs this data."""
    fig = figure(10.0, 3.8)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    rows = drift["classes"]
    y = np.arange(len(rows))
    left.barh(y - 0.2, [r["share_before"] for r in rows], height=0.4, label="model in service", color=_colour(3))
    left.barh(y + 0.2, [r["share_now"] for r in rows], height=0.4, label="this data", color=_colour(2))
    left.set_yticks(y, labels=[r["class"] for r in rows])
    left.invert_yaxis()
    left.set_xlabel("share of objects")
    left.set_title("class shares")
    left.legend(fontsize=7)
    x = np.arange(len(SIZE_EDGES) - 1)
    for k, label, shift, colour in (("size_histogram_before", "model in service", -0.2, _colour(3)),
                                    ("size_histogram_now", "this data", 0.2, _colour(2))):
        h = np.asarray(drift[k], dtype=float)
        right.bar(x + shift, h / max(h.sum(), 1), width=0.4, label=label, color=colour)
    names = [f"<{SIZE_EDGES[i + 1]}" for i in range(len(SIZE_EDGES) - 2)] + [f">={SIZE_EDGES[-2]}"]
    right.set_xticks(x, labels=names, fontsize=7)
    right.set_xlabel("box size at the input size (px)")
    right.set_title(f"box sizes (total variation {drift['size_distance']:.2f})")
    right.legend(fontsize=7)
    return png_bytes(fig)
