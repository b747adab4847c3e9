"""The input size, chosen from the data when `--image-size` is not given.

A step's cost grows with the square of the input size, so the smallest size that still lets the
model see the dataset's small boxes is the one that learns most per minute. "See" is measured
against the model's own anchors. Model Garden's RetinaNet assigns a box to an anchor when their IoU
reaches the parser's match threshold (0.5). A box as large as the smallest anchor
(`anchor_size * 2**min_level` px: 24 px for the CPU preset) reaches it wherever it lies on that
level's grid (IoU 0.53 half a stride off); a box of `anchor * sqrt(threshold)` (17 px) only when
centred on an anchor, so most such boxes get none. And the parser's scale jitter shrinks images by
up to `aug_scale_min` (0.8) before labelling.

The choice: the smallest multiple of 2**max_level (64 for the presets; `size_multiple`) at which the
SMALL_BOX_QUANTILE of the training boxes (their square-root area, measured on the image resized so
its longer side is the input size, as Model Garden's parsers resize) is at least the smallest anchor
at the smallest jitter (24 / 0.8 = 30 px), between MIN_SIZE and twice the experiment's default size.
Measured (10-minute runs, README): the generated sample data (its smallest tenth of boxes at 0.171
of the image) scored mAP@0.5 0.978 at 128 px (the 17 px rule's choice), 0.997 at 192 (this rule's);
the raccoon photos (0.338) 0.881 at 128 and 0.787 at 256. Data of small objects gets a larger
input, up to the cap (the reason line then says that some boxes stay under the anchors).
"""

from __future__ import annotations

import math

import numpy as np

SMALL_BOX_QUANTILE = 0.10  # the "small boxes": the smallest tenth of the training boxes
MIN_SIZE = 128


def size_multiple(model) -> int:
    """What an input size must be a multiple of for the experiment's `task.model` config: Model Garden's
    parsers pad the image to a multiple of 2**max_level (the coarsest feature map's stride), and the
    model is built for `input_size` exactly, so any other size fails at the first step (64 for the presets)."""
    level = getattr(model, "max_level", None)
    return max(32, 2 ** int(level)) if level is not None else 32


def smallest_anchor(model) -> float:
    """The side of the smallest anchor in pixels (the data report's `Geometry` computes the same)."""
    return float(model.anchor.anchor_size) * 2 ** int(model.min_level)


def choose_input_size(sides: np.ndarray, task) -> tuple[int, str]:
    """(input size, the one-line reason) for boxes of relative sides `sides` (`checks.relative_box_sides`);
    `task`: the experiment's `task` config (the model's anchors and levels, its default input size, the
    training parser's scale jitter)."""
    model = task.model
    default = int(model.input_size[0] or 640)
    jitter = min(1.0, float(getattr(task.train_data.parser, "aug_scale_min", 1.0) or 1.0))
    anchor = smallest_anchor(model)
    needed = anchor / jitter
    step = size_multiple(model)
    cap = max(step, 2 * default // step * step)
    sides = np.asarray(sides, dtype=np.float64)
    sides = sides[sides > 0]
    if not sides.size:
        return default, f"input size {default} px (the experiment's default: no boxes to size it from)"
    small = float(np.quantile(sides, SMALL_BOX_QUANTILE))
    wanted = needed / small
    size = int(min(max(math.ceil(wanted / step) * step, MIN_SIZE), cap))
    share = 100 * SMALL_BOX_QUANTILE
    shrunk = f", {needed:.0f} px before the parser's smallest scale jitter ({jitter:g}x)" if jitter < 1 else ""
    reason = (f"input size {size} px, chosen from the data: the smallest {share:.0f} % of the {sides.size} training "
              f"boxes are under {small:.3f} of their image's longer side, {small * size:.0f} px at {size} px "
              f"(they should cover the smallest anchor, {anchor:.0f} px{shrunk})")
    if size == cap and wanted > cap:
        reason += f"; capped at {cap} px, so some small boxes stay under the anchors"
    elif size == MIN_SIZE and wanted < MIN_SIZE:
        reason += f"; {MIN_SIZE} px is the smallest size chosen"
    return size, reason + "; --image-size overrides it"
