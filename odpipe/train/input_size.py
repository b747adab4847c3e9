"""The input size, chosen from the data when `--image-size` is not given.

A step's cost grows with the square of the input size, so the smallest size that still lets the
model see the dataset's small boxes is the one that learns most per minute. "See" is measured
against the model's own anchors: Model Garden's RetinaNet assigns a box to an anchor when their IoU
reaches the parser's match threshold (0.5), and a box smaller than the smallest anchor
(`anchor_size * 2**min_level` px: 24 px for the CPU preset) reaches it only down to
`smallest_anchor * sqrt(threshold)` px across (17 px). Below that the box gets no anchor and the
model never learns it.

The choice: the smallest multiple of 32 at which the SMALL_BOX_QUANTILE of the training boxes (their
square-root area, measured on the image resized so its longer side is the input size, as Model
Garden's parsers resize) is at least that many pixels, between MIN_SIZE and twice the experiment's
default size. Data of large objects (most photos of one thing) trains at 128-192 px, three to four
times cheaper per step than the preset's 256; data of small objects gets a larger input, up to the
cap (the reason line then says that some boxes stay under the anchors).
"""

from __future__ import annotations

import math

import numpy as np

SMALL_BOX_QUANTILE = 0.10  # the "small boxes": the smallest tenth of the training boxes
MIN_SIZE = 128
STEP = 32


def smallest_matchable(model, match_threshold: float = 0.5) -> tuple[float, float]:
    """(the smallest anchor, the smallest box that still matches it at the match threshold), in pixels across
    (the data report's `Geometry` computes the same from the same config)."""
    anchor = float(model.anchor.anchor_size) * 2 ** int(model.min_level)
    return anchor, anchor * math.sqrt(match_threshold)


def choose_input_size(sides: np.ndarray, model, default: int, match_threshold: float = 0.5) -> tuple[int, str]:
    """(input size, the one-line reason) for boxes of relative sides `sides` (`checks.relative_box_sides`);
    `model`: the experiment's `task.model` config (anchors, levels)."""
    anchor, needed = smallest_matchable(model, match_threshold)
    cap = 2 * default
    sides = np.asarray(sides, dtype=np.float64)
    sides = sides[sides > 0]
    if not sides.size:
        return default, f"input size {default} px (the experiment's default: no boxes to size it from)"
    small = float(np.quantile(sides, SMALL_BOX_QUANTILE))
    wanted = needed / small
    size = int(min(max(math.ceil(wanted / STEP) * STEP, MIN_SIZE), cap))
    share = 100 * SMALL_BOX_QUANTILE
    reason = (f"input size {size} px, chosen from the data: the smallest {share:.0f} % of the {sides.size} training "
              f"boxes are under {small:.3f} of their image's longer side, {small * size:.0f} px at {size} px "
              f"(the smallest anchor, {anchor:.0f} px, matches boxes from {needed:.0f} px)")
    if size == cap and wanted > cap:
        reason += f"; capped at {cap} px, so some small boxes stay under the anchors"
    elif size == MIN_SIZE and wanted < MIN_SIZE:
        reason += f"; {MIN_SIZE} px is the smallest size chosen"
    return size, reason + "; --image-size overrides it"
