"""What train refuses before it builds a model or writes a file (issue 9: items 1-4, 9, 14)."""

from __future__ import annotations

import logging
import math
import shutil

import pytest

from odpipe.errors import UserError

LABELS = {1: "circle", 2: "square", 3: "triangle"}


def _write_map(path, label_map):
    from odpipe.label_map import format_label_map

    path.write_text(format_label_map(label_map))
    return str(path)


def _cli(args, capsys):
    from odpipe.cli import main

    rc = main(["train", *args])
    err = capsys.readouterr().err.strip()
    return rc, err


# -- records against the label map ------------------------------------------------------------


def test_scan_records_reads_classes_and_counts(records):
    from odpipe.train.checks import scan_records

    scan = scan_records(records["train"])
    assert scan["examples"] > 0 and len(scan["files"]) == 2
    assert set(scan["classes"]) <= {(i, n) for i, n in LABELS.items()}
    assert sum(scan["classes"].values()) == scan["objects"] > 0


@pytest.mark.parametrize("label_map, match", [
    ({1: "circle", 2: "square"}, r"no id 3 \('triangle'"),  # a 2-class map over 3-class records
    ({1: "square", 2: "circle", 3: "triangle"}, "id 1 is 'square' but the --train records call it 'circle'"),
])
def test_train_stops_before_the_model_when_records_disagree_with_the_label_map(
        records, tmp_path, capsys, label_map, match):
    import re

    path = _write_map(tmp_path / "map.pbtxt", label_map)
    model_dir = tmp_path / "m"
    rc, err = _cli(["--train", records["train"], "--eval", records["eval"], "--label-map", path,
                    "--model-dir", str(model_dir), "--init-checkpoint", "none"], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and re.search(match, err), err
    assert "map.pbtxt" in err and not model_dir.exists()  # nothing written


def test_empty_and_unreadable_records_are_one_line_errors(records, label_map_path, tmp_path, capsys):
    import tensorflow as tf

    empty = tmp_path / "empty-00000-of-00001.tfrecord"
    empty.write_bytes(b"")  # a valid TFRecord file with no record: what a run that rejected every image wrote
    base = ["--label-map", str(label_map_path), "--model-dir", str(tmp_path / "m"), "--init-checkpoint", "none"]
    rc, err = _cli(["--train", str(empty), "--eval", records["eval"], *base], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and "0 examples" in err and "--train" in err
    rc, err = _cli(["--train", records["train"], "--eval", str(empty), *base], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and "0 examples" in err and "--eval" in err
    garbage = tmp_path / "garbage.tfrecord"
    with tf.io.TFRecordWriter(str(garbage)) as w:
        w.write(b"\x01\x02 not a tf.train.Example")
    rc, err = _cli(["--train", str(garbage), "--eval", records["eval"], *base], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and "garbage.tfrecord" in err and "tf.train.Example" in err
    assert not (tmp_path / "m").exists()


# -- numeric options: 0 is an error, never a default --------------------------------------------


@pytest.mark.parametrize("kwargs, flag", [
    ({"steps": 0}, "--steps"), ({"steps": -5}, "--steps"), ({"batch_size": 0}, "--batch-size"),
    ({"learning_rate": 0.0}, "--learning-rate"), ({"learning_rate": -0.1}, "--learning-rate"),
    ({"learning_rate": math.nan}, "--learning-rate"), ({"image_size": 0}, "--image-size"),
    ({"eval_interval": 0}, "--eval-interval"), ({"checkpoint_interval": 0}, "--checkpoint-interval"),
    ({"eval_steps": 0}, "--eval-steps"), ({"aug_scale_min": 0.0}, "--aug-scale-min"),
])
def test_zero_or_negative_numbers_are_errors(kwargs, flag):
    from odpipe.train import build_config

    with pytest.raises(UserError, match=f"^{flag} .*must be a positive"):
        build_config("t", "e", LABELS, init_checkpoint="none", **kwargs)


def test_none_means_the_experiment_default():
    from odpipe.train import PRESETS, build_config

    config = build_config("t", "e", LABELS, steps=None, batch_size=None, image_size=None, learning_rate=None)
    preset = PRESETS["retinanet-mobilenetv2"]
    assert config.trainer.train_steps == preset.steps
    assert config.task.train_data.global_batch_size == preset.batch_size
    assert config.task.model.input_size[0] == preset.image_size


def test_cli_zero_steps_and_time_budget_are_one_line(records, label_map_path, tmp_path, capsys):
    base = ["--train", records["train"], "--eval", records["eval"], "--label-map", str(label_map_path),
            "--model-dir", str(tmp_path / "m"), "--init-checkpoint", "none"]
    for extra, flag in ((["--steps", "0"], "--steps 0"), (["--batch-size", "0"], "--batch-size 0"),
                        (["--time-budget", "0"], "--time-budget 0")):
        rc, err = _cli(base + extra, capsys)
        assert rc == 2 and len(err.splitlines()) == 1 and flag in err, err
    assert not (tmp_path / "m").exists()


# -- the model dir ------------------------------------------------------------------------------


def test_model_dir_that_is_a_file_is_one_line(records, label_map_path, tmp_path, capsys):
    target = tmp_path / "afile"
    target.write_text("x")
    rc, err = _cli(["--train", records["train"], "--eval", records["eval"], "--label-map", str(label_map_path),
                    "--model-dir", str(target), "--init-checkpoint", "none"], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and "afile" in err and "is a file" in err
    assert target.read_text() == "x"


def test_incompatible_rerun_refuses_before_writing(trained, records, tmp_path):
    from fixture_model import FIXTURE_TRAIN

    from odpipe.train import train

    model_dir = tmp_path / "existing"
    shutil.copytree(trained[0], model_dir)
    before = {name: (model_dir / name).read_bytes() for name in ("config.yaml", "label_map.pbtxt", "odpipe.json")}
    bigger = _write_map(tmp_path / "bigger.pbtxt", {**LABELS, 4: "star"})  # the records still match it
    with pytest.raises(UserError, match=r"another label map .*use a new --model-dir.*--init-checkpoint "):
        train(records["train"], records["eval"], bigger, str(model_dir), echo=lambda _m: None, **FIXTURE_TRAIN)
    same_map = str(model_dir / "label_map.pbtxt")
    other_head = dict(FIXTURE_TRAIN, config_overrides={"task": {"model": {"head": {"num_convs": 1},
                                                                          "detection_generator": {"max_num_detections": 7}}}})
    with pytest.raises(UserError, match=r"another model \(task\.model\.head\.num_convs: 2 -> 1\)"):
        train(records["train"], records["eval"], same_map, str(model_dir), echo=lambda _m: None, **other_head)
    assert {name: (model_dir / name).read_bytes() for name in before} == before


# -- what the user sees while training ----------------------------------------------------------


def test_library_output_hides_orbit_dicts_unless_verbose(capfd):
    import absl.logging  # noqa: F401  (absl's logger is the one Orbit and Model Garden log through)

    from odpipe.train.progress import library_output

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep(level=logging.INFO)
    absl_logger = logging.getLogger("absl")
    absl_logger.addHandler(handler)
    old = absl_logger.level
    absl_logger.setLevel(logging.INFO)
    try:
        with library_output(verbose=False):
            print("train | step: 10 | {'total_loss': 1.0}")
            absl_logger.info("train | step: 10")
        quiet = capfd.readouterr().out
        with library_output(verbose=True):
            print("eval | step: 10 | {'AP50': 0.5}")
            absl_logger.info("eval | step: 10")
        loud = capfd.readouterr().out
    finally:
        absl_logger.removeHandler(handler)
        absl_logger.setLevel(old)
    assert "train | step" not in quiet and "eval | step: 10" in loud
    assert [r.getMessage() for r in records] == ["eval | step: 10"]
    assert absl_logger.level == old
