"""Mosaic augmentation for Model Garden's RetinaNet input pipeline (which has none).

Four decoded training examples become one scene, as the strongest small-data detectors do (YOLOv4
onward): each image is resized so its longer side is the output size S, placed in one quadrant
around a random centre of a 2S x 2S canvas, and the S x S window in the canvas's middle is kept.
Boxes are shifted with their image and clipped to the window; a box that keeps less than
MIN_KEPT_AREA of its area (or is under 2 px across) is dropped, as it is no longer the object.
Objects keep their scale (no shrinking to a quarter), so small-object data does not suffer; every
step sees four images' objects in new contexts and at new borders. The result is an ordinary
decoded example (uint8 image, normalised boxes, classes, crowd flags, areas) that Model Garden's
parser then jitters in scale, flips and labels with anchors as it does any image.

`mosaic_dataset(decoded, probability, size)` applies it to a share `probability` of the examples of a
decoded (and repeated, shuffled) dataset.
"""

from __future__ import annotations

import tensorflow as tf

MIN_KEPT_AREA = 0.3
FILL = 114  # the grey of the empty canvas (Ultralytics' letterbox value)
CENTRE_RANGE = (0.6, 1.4)  # the mosaic centre, in units of the output size, on the 2S canvas


def _tile(example: dict, size: int, corner: int, xc: tf.Tensor, yc: tf.Tensor):
    """One image placed in quadrant `corner` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) of the
    mosaic around (xc, yc), cut to the output window [S/2, 3S/2): (S x S image, mask, boxes in window px, keep)."""
    image = example["image"]
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    scale = size / tf.maximum(h, w)
    nh = tf.maximum(tf.cast(tf.round(h * scale), tf.int32), 1)
    nw = tf.maximum(tf.cast(tf.round(w * scale), tf.int32), 1)
    resized = tf.image.resize(image, [nh, nw])  # float32
    fh, fw = tf.cast(nh, tf.float32), tf.cast(nw, tf.float32)
    x0 = xc - fw if corner in (0, 2) else xc  # the tile's top-left corner on the 2S canvas
    y0 = yc - fh if corner in (0, 1) else yc
    lo, hi = size / 2, 3 * size / 2
    ix0, iy0 = tf.maximum(x0, lo), tf.maximum(y0, lo)
    ix1, iy1 = tf.minimum(x0 + fw, hi), tf.minimum(y0 + fh, hi)
    cw = tf.maximum(tf.cast(tf.round(ix1 - ix0), tf.int32), 0)
    ch = tf.maximum(tf.cast(tf.round(iy1 - iy0), tf.int32), 0)
    crop_x = tf.clip_by_value(tf.cast(tf.round(ix0 - x0), tf.int32), 0, nw - 1)
    crop_y = tf.clip_by_value(tf.cast(tf.round(iy0 - y0), tf.int32), 0, nh - 1)
    # at least one pixel (an image thinner than half a pixel at this scale): pad_to_bounding_box needs one
    cw = tf.maximum(tf.minimum(cw, nw - crop_x), 1)
    ch = tf.maximum(tf.minimum(ch, nh - crop_y), 1)
    crop = resized[crop_y:crop_y + ch, crop_x:crop_x + cw]
    off_x = tf.clip_by_value(tf.cast(tf.round(ix0 - lo), tf.int32), 0, size - cw)
    off_y = tf.clip_by_value(tf.cast(tf.round(iy0 - lo), tf.int32), 0, size - ch)
    placed = tf.image.pad_to_bounding_box(crop, off_y, off_x, size, size)
    mask = tf.image.pad_to_bounding_box(tf.ones([ch, cw, 1]), off_y, off_x, size, size)
    # boxes: normalised [ymin, xmin, ymax, xmax] of the image -> pixels of the output window
    boxes = example["groundtruth_boxes"]
    ys = boxes[:, 0::2] * fh + y0 - lo
    xs = boxes[:, 1::2] * fw + x0 - lo
    full = (ys[:, 1] - ys[:, 0]) * (xs[:, 1] - xs[:, 0])
    wx0, wy0 = ix0 - lo, iy0 - lo
    wx1, wy1 = wx0 + tf.cast(cw, tf.float32), wy0 + tf.cast(ch, tf.float32)
    ys = tf.clip_by_value(ys, wy0, wy1)
    xs = tf.clip_by_value(xs, wx0, wx1)
    bh, bw = ys[:, 1] - ys[:, 0], xs[:, 1] - xs[:, 0]
    keep = (bh >= 2) & (bw >= 2) & (bh * bw >= MIN_KEPT_AREA * tf.maximum(full, 1e-6))
    window_boxes = tf.stack([ys[:, 0], xs[:, 0], ys[:, 1], xs[:, 1]], axis=1)
    return placed, mask, window_boxes, keep


def mosaic(examples: tuple[dict, ...], size: int, seed: int | None = None) -> dict:
    """Four decoded examples -> one decoded S x S example (see the module docstring)."""
    xc = tf.random.uniform([], CENTRE_RANGE[0] * size, CENTRE_RANGE[1] * size, seed=seed)
    yc = tf.random.uniform([], CENTRE_RANGE[0] * size, CENTRE_RANGE[1] * size, seed=seed)
    canvas = tf.zeros([size, size, 3])
    covered = tf.zeros([size, size, 1])
    boxes, classes, crowd = [], [], []
    for corner, example in enumerate(examples):
        placed, mask, window_boxes, keep = _tile(example, size, corner, xc, yc)
        canvas += placed * mask
        covered += mask
        boxes.append(tf.boolean_mask(window_boxes, keep))
        classes.append(tf.boolean_mask(example["groundtruth_classes"], keep))
        crowd.append(tf.boolean_mask(example["groundtruth_is_crowd"], keep))
    canvas += FILL * (1 - tf.minimum(covered, 1.0))
    boxes = tf.concat(boxes, axis=0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    first = examples[0]
    return {
        "source_id": first["source_id"],
        "image": tf.cast(tf.clip_by_value(tf.round(canvas), 0, 255), tf.uint8),
        "height": tf.constant(size, first["height"].dtype),
        "width": tf.constant(size, first["width"].dtype),
        "groundtruth_classes": tf.concat(classes, axis=0),
        "groundtruth_is_crowd": tf.concat(crowd, axis=0),
        "groundtruth_area": tf.cast(area, first["groundtruth_area"].dtype),
        "groundtruth_boxes": boxes / size,
    }


def _common(example: dict) -> dict:
    """The keys mosaic() produces, in the same dtypes (a plain example passes through unchanged)."""
    keys = ("source_id", "image", "height", "width", "groundtruth_classes", "groundtruth_is_crowd",
            "groundtruth_area", "groundtruth_boxes")
    return {k: example[k] for k in keys}


def mosaic_dataset(decoded: tf.data.Dataset, probability: float, size: int, shuffle_buffer: int = 64,
                   seed: int | None = None) -> tf.data.Dataset:
    """`decoded` (repeated) with a share `probability` of its examples replaced by mosaics of four."""
    if probability <= 0:
        return decoded
    partners = [decoded.shuffle(shuffle_buffer, seed=None if seed is None else seed + k) for k in range(1, 4)]
    zipped = tf.data.Dataset.zip((decoded, *partners))

    def combine(*examples):
        use = tf.random.uniform([], seed=seed) < probability
        return tf.cond(use, lambda: mosaic(examples, size, seed), lambda: _common(examples[0]))

    return zipped.map(combine, num_parallel_calls=tf.data.AUTOTUNE)
