"""Train stage: pure config/strategy/checkpoint helpers, and real Model Garden training runs."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from odpipe.errors import UserError

LABELS = {1: "circle", 2: "square", 3: "triangle"}


# -- pure helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "strategy, tpu, gpus, expected",
    [
        ("auto", None, 0, ("one_device", "float32", 0)),
        ("auto", None, 1, ("one_device", "float16", 1)),
        ("auto", None, 4, ("mirrored", "float16", 4)),
        ("auto", "grpc://10.0.0.2:8470", 0, ("tpu", "bfloat16", 0)),
        ("cpu", None, 2, ("one_device", "float32", 0)),
        ("gpu", None, 2, ("one_device", "float16", 1)),
        ("mirrored", None, 2, ("mirrored", "float16", 2)),
        ("tpu", "local", 0, ("tpu", "bfloat16", 0)),
    ],
)
def test_select_runtime(strategy, tpu, gpus, expected):
    from odpipe.train import select_runtime

    got = select_runtime(strategy, tpu, gpus)
    assert (got["distribution_strategy"], got["mixed_precision_dtype"], got["num_gpus"]) == expected
    assert got["tpu"] == (tpu or "")


@pytest.mark.parametrize("strategy, tpu, gpus", [("tpu", None, 0), ("gpu", None, 0), ("mirrored", None, 0), ("x", None, 0)])
def test_select_runtime_errors(strategy, tpu, gpus):
    from odpipe.train import select_runtime

    with pytest.raises(UserError):
        select_runtime(strategy, tpu, gpus)


def test_num_classes_is_max_id_plus_one():
    from odpipe.label_map import num_classes
    from odpipe.train import build_config

    assert num_classes(LABELS) == 4
    assert num_classes({1: "a", 7: "b"}) == 8  # ids with gaps (an extended label map)
    config = build_config("t-*.tfrecord", "e-*.tfrecord", {2: "a", 5: "b"}, steps=10)
    assert config.task.model.num_classes == 6


def test_build_config_preset_defaults_and_schedule():
    from odpipe.train import PRESETS, build_config

    config = build_config("t-*.tfrecord", "e-*.tfrecord", LABELS, steps=300, batch_size=4)
    preset = PRESETS["retinanet-mobilenetv2"]
    assert config.task.model.backbone.type == "mobilenet"
    assert config.task.model.input_size == [preset.image_size, preset.image_size, 3]
    # absolute, so config.yaml names the same records from any folder (int8 calibration reads them)
    assert config.task.train_data.input_path == os.path.abspath("t-*.tfrecord")
    assert config.task.validation_data.input_path == os.path.abspath("e-*.tfrecord")
    assert build_config("a/t-*.tfrecord,gs://b/t-*.tfrecord", "e", LABELS).task.train_data.input_path == (
        f"{os.path.abspath('a/t-*.tfrecord')},gs://b/t-*.tfrecord")
    assert config.task.train_data.global_batch_size == 4
    assert config.trainer.train_steps == 300
    assert config.trainer.optimizer_config.learning_rate.cosine.decay_steps == 300
    assert config.trainer.optimizer_config.learning_rate.cosine.initial_learning_rate == pytest.approx(
        preset.learning_rate * 4 / preset.batch_size
    )
    assert config.trainer.best_checkpoint_export_subdir == "best"
    assert config.runtime.mixed_precision_dtype == "float32"
    parser = config.task.train_data.parser
    assert parser.aug_rand_hflip is True and (parser.aug_scale_min, parser.aug_scale_max) == (0.8, 1.25)
    with pytest.raises(ValueError, match="locked"):
        config.override({"trainer": {"train_steps": 1}})


def test_build_config_gpu_preset_augmentation_and_runtime():
    from odpipe.train import build_config, select_runtime

    config = build_config(
        "t", "e", LABELS, model="retinanet-resnet50fpn", runtime=select_runtime("gpu", None, 1),
        aug_type="randaugment", aug_hflip=False, aug_scale_min=0.5, aug_scale_max=2.0,
    )
    assert config.task.model.backbone.type == "resnet" and config.task.model.input_size == [640, 640, 3]
    assert config.runtime.mixed_precision_dtype == "float16" and config.task.train_data.dtype == "float16"
    parser = config.task.train_data.parser
    assert parser.aug_type.type == "randaug" and parser.aug_rand_hflip is False
    assert (parser.aug_scale_min, parser.aug_scale_max) == (0.5, 2.0)
    # any registered Model Garden detection experiment is accepted too
    assert build_config("t", "e", LABELS, model="retinanet_spinenet_coco", image_size=128).task.model.num_classes == 4


def test_overrides_strict(tmp_path):
    from odpipe.train import build_config

    good = tmp_path / "good.yaml"
    good.write_text("task:\n  model:\n    head:\n      num_convs: 1\ntrainer:\n  max_to_keep: 2\n")
    config = build_config("t", "e", LABELS, config_overrides=str(good))
    assert config.task.model.head.num_convs == 1 and config.trainer.max_to_keep == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("task:\n  model:\n    hed:\n      num_convs: 1\n")
    with pytest.raises(UserError, match=r"bad\.yaml.*hed"):
        build_config("t", "e", LABELS, config_overrides=str(bad))
    with pytest.raises(UserError, match="not found"):
        build_config("t", "e", LABELS, config_overrides=str(tmp_path / "missing.yaml"))
    with pytest.raises(UserError, match="nope"):
        build_config("t", "e", LABELS, config_overrides={"trainer": {"nope": 1}})


@pytest.mark.parametrize("kwargs, match", [
    ({"model": "no-such-model"}, "no-such-model"),
    ({"image_size": 100}, "needs a multiple of 64 .* use 64 or 128"),
    ({"image_size": 160}, "needs a multiple of 64 .* use 128 or 192"),  # Model Garden pads 160 to 192: a crash
    ({"aug_scale_min": 2.0, "aug_scale_max": 1.0}, "min <= max"),
    ({"init_checkpoint_modules": "head"}, "init-checkpoint-modules"),
])
def test_build_config_errors(kwargs, match):
    from odpipe.train import build_config

    with pytest.raises(UserError, match=match):
        build_config("t", "e", LABELS, **kwargs)


def test_early_stopping():
    from odpipe.train import EarlyStopping

    stop = EarlyStopping(patience=2)
    assert [stop.update(v) for v in (0.1, 0.3, 0.2, 0.3, 0.5, 0.4, 0.4)] == [False, False, False, True, False, False, True]
    never = EarlyStopping(patience=0)
    assert not any(never.update(0.0) for _ in range(5))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("ckpt")
    ckpt = tf.train.Checkpoint(v=tf.Variable([1.0, 2.0]))
    ckpt.save(str(folder / "ckpt"))
    prefix = ckpt.save(str(folder / "ckpt"))  # ckpt-2 is the latest
    return folder, prefix


def test_resolve_checkpoint_forms(tiny_checkpoint):
    from odpipe.train import resolve_checkpoint

    folder, prefix = tiny_checkpoint
    assert prefix.endswith("ckpt-2")
    assert resolve_checkpoint(str(folder)) == prefix
    assert resolve_checkpoint(str(folder) + "/") == prefix
    assert resolve_checkpoint(prefix) == prefix
    assert resolve_checkpoint(prefix + ".index") == prefix
    assert resolve_checkpoint(prefix + ".data-00000-of-00001") == prefix  # the classic "data loss" mistake
    (folder / "checkpoint").unlink()  # no state file: the newest *.index wins
    assert resolve_checkpoint(str(folder)) == prefix
    with pytest.raises(UserError, match="no ckpt-9.index"):
        resolve_checkpoint(str(folder / "ckpt-9.data-00000-of-00001"))
    with pytest.raises(UserError, match="not a checkpoint"):
        resolve_checkpoint(str(folder / "nothing"))
    empty = folder / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="holds no checkpoint"):
        resolve_checkpoint(str(empty))


def test_small_training_set_cached_decoded_and_augmented_every_epoch(records, label_map_path, monkeypatch):
    from odpipe.label_map import read_label_map
    from odpipe.modeling import detection
    from odpipe.train import build_config

    config = build_config(records["train"], records["eval"], read_label_map(str(label_map_path)), image_size=128,
                          batch_size=4, steps=10)
    task = detection.build_task(config.task)
    files = detection._input_files(config.task.train_data)
    assert detection.decoded_bytes(files) > 0
    assert detection.decoded_bytes(files, scan_limit=1) is None  # too big to scan: streamed as before
    assert detection._cacheable_training_files(task, config.task.train_data, None) == files
    assert detection._cacheable_training_files(task, config.task.validation_data, None) is None
    cached = task.build_inputs(config.task.train_data)
    monkeypatch.setattr(detection, "DECODED_CACHE_BYTES", 0)
    assert detection._cacheable_training_files(task, config.task.train_data, None) is None
    streamed = task.build_inputs(config.task.train_data)
    assert cached.element_spec == streamed.element_spec  # the same batches as Model Garden's pipeline
    # ~4 passes over the (~19) training images: each one's scale jitter is drawn anew every time it comes round.
    scales: dict[tuple, set] = {}
    for _, labels in cached.take(20):
        for info in labels["image_info"].numpy():
            scales.setdefault(tuple(info[0]), set()).add(round(float(info[2][0]), 5))
    seen_again = [s for s in scales.values() if len(s) > 1]
    assert len(scales) >= 10
    assert len(seen_again) > len(scales) // 2, scales


# -- real training ----------------------------------------------------------------------------


def test_training_lowers_loss_and_writes_model_dir(trained):
    model_dir, result = trained
    losses = [loss for _, loss in result["losses"]]
    assert result["step"] == 100 and result["start_step"] == 0
    assert len(losses) >= 4 and all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < np.mean(losses[:2])  # real steps lower the loss
    for name in ("config.yaml", "label_map.pbtxt", "checkpoint", "best.json", "train_result.json"):
        assert (model_dir / name).is_file(), name
    assert list((model_dir / "train").iterdir()), "TensorBoard train summaries"
    assert list((model_dir / "validation").iterdir()), "TensorBoard eval summaries"
    assert "AP50" in result["metrics"] and 0.0 <= result["metrics"]["AP50"] <= 1.0
    best = json.loads((model_dir / "best.json").read_text())
    assert best["step"] == 100 and best["checkpoint"].startswith(str(model_dir / "best"))
    assert "num_classes: 4" in (model_dir / "config.yaml").read_text()


def test_resume_continues_from_saved_step(trained, records, label_map_path, tmp_path, capfd):
    from fixture_model import FIXTURE_TRAIN

    from odpipe.train import train

    model_dir = tmp_path / "resumed"
    shutil.copytree(trained[0], model_dir)
    messages = []
    options = dict(FIXTURE_TRAIN, steps=FIXTURE_TRAIN["steps"] + 5, eval_interval=FIXTURE_TRAIN["steps"] + 5)
    result = train(records["train"], records["eval"], str(label_map_path), str(model_dir), echo=messages.append,
                   eval_steps=1, **options)
    assert result["start_step"] == FIXTURE_TRAIN["steps"]  # not 0
    assert result["step"] == FIXTURE_TRAIN["steps"] + 5
    assert any(f"resuming from step {FIXTURE_TRAIN['steps']}" in m for m in messages)
    assert any("steps/s" in m and "ETA" in m for m in messages)
    printed = capfd.readouterr().out
    assert "train | step" not in printed and "eval | step" not in printed  # Orbit's dicts: TensorBoard / --verbose
    assert result["init"]["source"] == "none" and result["init"]["resumed"] is True


def test_init_checkpoint_from_data_file_loads_weights(trained, records, label_map_path):
    import tensorflow as tf

    from odpipe.modeling.detection import build_task
    from odpipe.train import build_config, read_label_map

    model_dir = trained[0]
    prefix = tf.train.latest_checkpoint(str(model_dir))
    config = build_config(records["train"], records["eval"], read_label_map(str(label_map_path)), image_size=128,
                          steps=10, init_checkpoint=prefix + ".data-00000-of-00001")
    assert config.task.init_checkpoint == prefix
    reader = tf.train.load_checkpoint(prefix)
    saved = [reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
             if k.split("/")[0] in ("backbone", "decoder", "head") and "OPTIMIZER_SLOT" not in k]

    def matching(model) -> int:
        return sum(any(t.shape == v.shape and np.array_equal(t, v.numpy()) for t in saved) for v in model.variables)

    task = build_task(config.task)
    fresh = task.build_model()
    model = task.build_model()
    task.initialize(model)
    assert matching(model) == len(model.variables)  # whole model restored
    assert matching(fresh) < len(fresh.variables) // 2


def test_cli_errors_are_one_line(records, label_map_path, tmp_path, capsys):
    from odpipe.cli import main

    base = ["train", "--eval", records["eval"], "--label-map", str(label_map_path), "--model-dir", str(tmp_path / "m")]
    rc = main(base + ["--train", str(tmp_path / "none-*.tfrecord")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "none-*.tfrecord" in err and "no TFRecord file matches" in err
    bad = tmp_path / "over.yaml"
    bad.write_text("trainer:\n  train_stepz: 3\n")
    rc = main(base + ["--train", records["train"], "--config", str(bad)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "over.yaml" in err and "train_stepz" in err
    rc = main(base + ["--train", records["train"], "--model", "yolo-v99"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "yolo-v99" in err
    rc = main(base + ["--train", records["train"], "--image-size", "160"])  # Model Garden would pad it to 192
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--image-size 160" in err and "use 128 or 192" in err


def test_the_command_as_typed_ends_at_once_with_its_summaries_written(records, label_map_path, tmp_path):
    """`odpipe train` as its own process leaves the input pipeline to the process's end and ends at once
    (cli.exit_now; the pipeline's teardown took 45-56 s in some 10-minute runs): what it wrote must still
    be complete, the TensorBoard points of the last evaluation included (flushed before the exit)."""
    import subprocess
    import sys

    import tensorflow as tf

    model_dir = tmp_path / "m"
    done = subprocess.run(
        [sys.executable, "-m", "odpipe", "train", "--train", records["train"], "--eval", records["eval"],
         "--label-map", str(label_map_path), "--model-dir", str(model_dir), "--init-checkpoint", "none",
         "--steps", "4", "--batch-size", "2", "--eval-steps", "1", "--eval-interval", "4", "--strategy", "cpu"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1].startswith("trained to step 4 in ")  # flushed before the exit
    result = json.loads((model_dir / "train_result.json").read_text())
    assert set(result["finish_seconds"]) == {"save", "flush"}  # no teardown inside the command
    tags = {v.tag for path in (model_dir / "validation").glob("events.out.tfevents.*")
            for event in tf.compat.v1.train.summary_iterator(str(path)) for v in event.summary.value}
    assert "AP50" in tags, tags
