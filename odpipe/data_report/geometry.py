"""What the model sees: its input size and the anchors it can match a box to.

Read from the registered experiment (an odpipe preset or any Model Garden detection experiment,
`odpipe.train.config.experiment_config`), never hard-coded: `model.input_size`, `min_level` ..
`max_level`, `anchor.anchor_size`, `anchor.num_scales`, `anchor.aspect_ratios` and the parser's
`match_threshold` (and the detection generator's `max_num_detections`). Model Garden's RetinaNet anchor at level l, scale i and aspect ratio a is
`anchor_size * 2**l * 2**(i/num_scales)` on a side, stretched to `* sqrt(a)` wide and `/ sqrt(a)`
high (`official/vision/ops/anchor.py`).

A box "cannot be matched" when even the best-placed anchor (centred on it, every level, scale and
aspect ratio) overlaps it with IoU below `match_threshold`: the training target then has no
positive anchor for that object, and the model never learns to find it. Real placement (anchor
centres sit on a grid of stride 2**level) only makes it worse, so the share is a lower bound.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from odpipe.errors import UserError
from odpipe.train.config import check_image_size, experiment_config


@dataclasses.dataclass(frozen=True)
class Geometry:
    model: str
    image_size: int  # the square input side the images are resized to
    min_level: int
    max_level: int
    anchor_size: float
    num_scales: int
    aspect_ratios: tuple[float, ...]
    match_threshold: float
    max_detections: int = 100  # the detection generator's max_num_detections

    def anchors(self) -> np.ndarray:
        """(N, 2) anchor widths and heights in input pixels, every level, scale and ratio."""
        out = []
        for level in range(self.min_level, self.max_level + 1):
            for scale in range(self.num_scales):
                side = self.anchor_size * 2 ** level * 2 ** (scale / self.num_scales)
                for ratio in self.aspect_ratios:
                    out.append((side * math.sqrt(ratio), side / math.sqrt(ratio)))
        return np.array(out, dtype=float)

    def smallest_anchor(self) -> float:
        """The side of the smallest square anchor (level min_level, first scale)."""
        return self.anchor_size * 2 ** self.min_level

    def smallest_matchable(self) -> float:
        """The side of the smallest square box an anchor can still match (IoU >= match_threshold)."""
        return self.smallest_anchor() * math.sqrt(self.match_threshold)

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["aspect_ratios"] = list(self.aspect_ratios)
        out["smallest_anchor_px"] = round(self.smallest_anchor(), 2)
        out["smallest_matchable_px"] = round(self.smallest_matchable(), 2)
        return out


def best_anchor_iou(widths, heights, anchors: np.ndarray) -> np.ndarray:
    """For boxes of `widths` x `heights` (input pixels): the IoU of the best anchor centred on each."""
    w = np.asarray(widths, dtype=float)[:, None]
    h = np.asarray(heights, dtype=float)[:, None]
    aw, ah = anchors[None, :, 0], anchors[None, :, 1]
    inter = np.minimum(w, aw) * np.minimum(h, ah)
    union = w * h + aw * ah - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou.max(axis=1) if iou.size else np.zeros(len(w))


@functools.lru_cache(maxsize=8)
def model_geometry(model: str, image_size: int | None = None) -> Geometry:
    """The geometry of the registered experiment `model` (`image_size` overrides its input size)."""
    config = experiment_config(model)
    m = config.task.model
    if image_size is not None:
        check_image_size(int(image_size), m)
    anchor = getattr(m, "anchor", None)
    if anchor is None or not hasattr(m, "min_level"):
        raise UserError(f"--model {model}: the experiment has no anchor configuration; use an anchor-based "
                        "detector (an odpipe preset or a RetinaNet experiment)")
    parser = config.task.train_data.parser
    size = int(image_size or m.input_size[0] or 640)
    return Geometry(model=model, image_size=size, min_level=int(m.min_level), max_level=int(m.max_level),
                    anchor_size=float(anchor.anchor_size), num_scales=int(anchor.num_scales),
                    aspect_ratios=tuple(float(a) for a in anchor.aspect_ratios),
                    match_threshold=float(getattr(parser, "match_threshold", 0.5)),
                    max_detections=int(getattr(getattr(m, "detection_generator", None), "max_num_detections", 100)))
