"""Mosaic augmentation (odpipe.modeling.mosaic): geometry of images and boxes, and the training input with it."""

from __future__ import annotations

import numpy as np
import pytest


def _example(size_hw, boxes, colour, classes=None):
    import tensorflow as tf

    h, w = size_hw
    image = np.zeros((h, w, 3), np.uint8)
    image[:] = colour
    n = len(boxes)
    return {
        "source_id": tf.constant("id"),
        "image": tf.constant(image),
        "height": tf.constant(h, tf.int64),
        "width": tf.constant(w, tf.int64),
        "groundtruth_classes": tf.constant(classes or [1] * n, tf.int64),
        "groundtruth_is_crowd": tf.zeros([n], tf.bool),
        "groundtruth_area": tf.zeros([n], tf.float32),
        "groundtruth_boxes": tf.constant(np.array(boxes, np.float32).reshape(-1, 4)),
    }


def test_four_images_meet_at_the_centre_with_their_boxes_moved_clipped_or_dropped(monkeypatch):
    from odpipe.modeling import mosaic

    monkeypatch.setattr(mosaic, "CENTRE_RANGE", (1.0, 1.0 + 1e-6))  # the centre at (S, S): each image shows a quarter
    size = 64
    examples = (
        _example((64, 64), [[0.6, 0.6, 0.9, 0.9], [0.1, 0.1, 0.3, 0.3]], (200, 0, 0), [1, 2]),  # top-left: its bottom-right
        _example((32, 64), [[0.0, 0.0, 1.0, 0.25]], (0, 200, 0), [3]),  # top-right, 2:1 wide: resized to 64x32
        _example((64, 64), [[0.0, 0.45, 0.2, 0.9]], (0, 0, 200), [1]),  # bottom-left: box half outside -> clipped
        _example((64, 64), [], (50, 50, 50)),
    )
    out = mosaic.mosaic(examples, size)
    image = out["image"].numpy()
    assert image.shape == (64, 64, 3) and out["height"].numpy() == 64
    assert tuple(image[10, 10]) == (200, 0, 0) and tuple(image[50, 10]) == (0, 0, 200)
    assert tuple(image[50, 50]) == (50, 50, 50)
    boxes, classes = out["groundtruth_boxes"].numpy(), out["groundtruth_classes"].numpy()
    # image 0's first box: y 0.6*64 = 38.4 on a tile ending at the centre (64): window y 38.4 - 32 = 6.4 -> 0.1
    np.testing.assert_allclose(boxes[0], [0.1, 0.1, 0.4, 0.4], atol=1e-5)
    assert list(classes) == [1, 3, 1]  # image 0's second box fell outside the window: dropped
    # image 1 (64 wide, 32 high) sits above the centre, right of it: its box spans x 0..16 px, y 0..32 of the tile,
    # the tile spans y 32..64 of the canvas: window y 0..32 -> 0..0.5
    np.testing.assert_allclose(boxes[1], [0.0, 0.5, 0.5, 0.75], atol=1e-5)
    # image 2's box: x 0.45..0.9 of the tile (28.8..57.6 px), the window keeps x >= 32 (tile x 32..64 -> window 0..32)
    np.testing.assert_allclose(boxes[2], [0.5, 0.0, 0.7, 25.6 / 64], atol=1e-5)
    assert out["groundtruth_area"].numpy() == pytest.approx(
        (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) * size * size, rel=1e-4)


def test_training_input_with_mosaic_keeps_model_gardens_batches(records, label_map_path):
    from odpipe.label_map import read_label_map
    from odpipe.modeling import detection
    from odpipe.train import build_config

    config = build_config(records["train"], records["eval"], read_label_map(str(label_map_path)), image_size=128,
                          batch_size=4, steps=10)
    task = detection.build_task(config.task)
    plain = task.build_inputs(config.task.train_data)
    task.mosaic = 1.0
    mosaics = task.build_inputs(config.task.train_data)
    assert mosaics.element_spec == plain.element_spec
    # every example is a 128 x 128 mosaic before the parser resizes it; plain ones keep their own sizes
    originals = {tuple(info[0]) for _, labels in mosaics.take(3) for info in labels["image_info"].numpy()}
    assert originals == {(128.0, 128.0)}
    assert {tuple(info[0]) for _, labels in plain.take(3) for info in labels["image_info"].numpy()} != originals
    positives = sum(float((labels["cls_targets"]["3"].numpy() > 0).sum()) for _, labels in mosaics.take(3))
    assert positives > 0  # the moved boxes still label anchors


def test_mosaic_share_must_be_between_0_and_1(records, label_map_path, tmp_path, capsys):
    from odpipe.cli import main

    rc = main(["train", "--train", records["train"], "--eval", records["eval"], "--label-map", str(label_map_path),
               "--model-dir", str(tmp_path / "m"), "--init-checkpoint", "none", "--mosaic", "1.5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--mosaic" in err[0]
    assert not (tmp_path / "m").exists()
