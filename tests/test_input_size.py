"""The input size chosen from the data when --image-size is not given (odpipe.train.input_size)."""

from __future__ import annotations

import numpy as np


def _task():
    from odpipe.train.config import experiment_config

    return experiment_config("retinanet-mobilenetv2").task  # anchors 3 x 2**3 = 24 px, scale jitter from 0.8


def test_large_objects_train_small_and_small_objects_get_a_larger_input():
    from odpipe.train.input_size import choose_input_size

    task = _task()
    assert task.train_data.parser.aug_scale_min == 0.8 and task.model.max_level == 6
    size, reason = choose_input_size(np.linspace(0.3, 0.6, 50), task)  # 24 / 0.8 / 0.33 = 91 px
    assert size == 128 and "128 px is the smallest size chosen" in reason and "--image-size overrides it" in reason
    size, reason = choose_input_size(np.full(100, 0.1), task)  # 30 px needed: 300 -> the next multiple of 64
    assert size == 320 and "smallest 10 %" in reason and "32 px at 320 px" in reason, reason
    assert "cover the smallest anchor, 24 px, 30 px before the parser's smallest scale jitter (0.8x)" in reason
    # 30 / 0.14 = 214 px: 224 would be the next multiple of 32, but Model Garden pads inputs to a multiple of
    # 2**max_level (64 here), and a 224 px model is then fed 256 px images and fails at its first step
    assert choose_input_size(np.full(100, 0.14), task)[0] == 256
    size, reason = choose_input_size(np.full(100, 0.01), task)
    assert size == 512 and "capped at 512 px, so some small boxes stay under the anchors" in reason
    assert choose_input_size(np.zeros(0), task)[0] == 256  # no boxes: the default


def test_box_sides_are_read_from_the_records_relative_to_the_longer_side(records, labels_csv):
    import pandas as pd

    from odpipe.train.checks import scan_records

    scan = scan_records(records["train"])
    sides = scan["box_sides"]
    assert len(sides) == scan["objects"] and ((sides > 0) & (sides <= 1)).all()
    rows = pd.read_csv(labels_csv)
    expected = np.sqrt((rows.xmax - rows.xmin) * (rows.ymax - rows.ymin)) / np.maximum(rows.width, rows.height)
    assert expected.min() - 1e-3 <= sides.min() and sides.max() <= expected.max() + 1e-3


def test_train_without_image_size_says_what_it_chose_and_uses_it(records, label_map_path, tmp_path, capsys):
    import yaml

    from odpipe.cli import main

    model_dir = tmp_path / "m"
    rc = main(["train", "--train", records["train"], "--eval", records["eval"], "--label-map", str(label_map_path),
               "--model-dir", str(model_dir), "--init-checkpoint", "none", "--steps", "2", "--batch-size", "2",
               "--eval-steps", "1", "--strategy", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0
    line = next(x for x in out.splitlines() if x.startswith("input size "))
    size = int(line.split()[2])
    assert "chosen from the data" in line and size % 64 == 0 and 128 <= size <= 512
    config = yaml.safe_load((model_dir / "config.yaml").read_text())
    assert config["task"]["model"]["input_size"] == [size, size, 3]
