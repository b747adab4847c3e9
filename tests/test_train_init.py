"""Presets as Model Garden experiments, and where training starts (issue 10 item 5, issue 11 item 1)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from odpipe.errors import UserError

LABELS = {1: "circle", 2: "square", 3: "triangle"}


def test_presets_are_registered_model_garden_experiments():
    from official.core import exp_factory

    from odpipe.train import PRESETS, build_config, register_presets
    from odpipe.train.presets import MOBILENETV2_IMAGENET, RESNET50_IMAGENET

    register_presets()
    register_presets()  # idempotent
    for name, preset in PRESETS.items():
        config = exp_factory.get_exp_config(name)
        assert config.task.init_checkpoint == preset.init_checkpoint
        assert config.task.init_checkpoint_modules == "backbone"
        assert config.task.model.input_size[:2] == [preset.image_size] * 2
        assert (config.trainer.train_steps, config.task.train_data.global_batch_size) == (preset.steps, preset.batch_size)
    assert PRESETS["retinanet-mobilenetv2"].init_checkpoint == MOBILENETV2_IMAGENET
    assert PRESETS["retinanet-resnet50fpn"].init_checkpoint == RESNET50_IMAGENET
    # a Model Garden experiment is read the same way: its own defaults, its own start checkpoint
    mg = exp_factory.get_exp_config("retinanet_resnetfpn_coco")
    config = build_config("t", "e", LABELS, model="retinanet_resnetfpn_coco")
    assert config.task.init_checkpoint == mg.task.init_checkpoint == RESNET50_IMAGENET
    assert config.trainer.train_steps == mg.trainer.train_steps
    assert config.task.train_data.global_batch_size == mg.task.train_data.global_batch_size
    # overrides stay strict on a preset too
    with pytest.raises(UserError, match="nope"):
        build_config("t", "e", LABELS, config_overrides={"task": {"model": {"nope": 1}}})


def test_from_scratch_the_cpu_preset_warms_up_over_a_fifth_of_the_steps():
    from odpipe.train import build_config

    def warmup_steps(config) -> int:
        return config.trainer.optimizer_config.warmup.get().warmup_steps

    scratch = build_config("t", "e", LABELS, steps=1000, init_checkpoint="none")
    pretrained = build_config("t", "e", LABELS, steps=1000)
    assert (warmup_steps(scratch), warmup_steps(pretrained)) == (200, 50)
    big = build_config("t", "e", LABELS, model="retinanet-resnet50fpn", steps=1000, init_checkpoint="none")
    assert warmup_steps(big) == 20  # that preset has no scratch warmup: its own 2 %
    # the user's override still wins
    given = build_config("t", "e", LABELS, steps=1000, init_checkpoint="none", config_overrides={
        "trainer": {"optimizer_config": {"warmup": {"linear": {"warmup_steps": 7}}}}})
    assert warmup_steps(given) == 7


def test_init_checkpoint_choices(tmp_path):
    import tensorflow as tf

    from odpipe.train import build_config
    from odpipe.train.presets import MOBILENETV2_IMAGENET

    default = build_config("t", "e", LABELS)
    assert (default.task.init_checkpoint, default.task.init_checkpoint_modules) == (MOBILENETV2_IMAGENET, "backbone")
    assert build_config("t", "e", LABELS, init_checkpoint="default").task.init_checkpoint == MOBILENETV2_IMAGENET
    assert build_config("t", "e", LABELS, init_checkpoint="none").task.init_checkpoint == ""
    assert build_config("t", "e", LABELS, init_checkpoint="").task.init_checkpoint == ""
    prefix = tf.train.Checkpoint(v=tf.Variable(1.0)).write(str(tmp_path / "ck" / "ckpt-7"))
    given = build_config("t", "e", LABELS, init_checkpoint=str(tmp_path / "ck" / "ckpt-7.index"))
    assert (given.task.init_checkpoint, given.task.init_checkpoint_modules) == (prefix, "all")
    some = build_config("t", "e", LABELS, init_checkpoint=prefix, init_checkpoint_modules="backbone,decoder")
    assert list(some.task.init_checkpoint_modules) == ["backbone", "decoder"]


@pytest.fixture(scope="module")
def source_checkpoints(tmp_path_factory):
    """A small detector with values no fresh initialisation gives, saved as a backbone-only
    (classification-style) checkpoint and as a whole-detector checkpoint."""
    import tensorflow as tf

    from odpipe.modeling.detection import build_task
    from odpipe.train import build_config

    # the published ImageNet checkpoint's shape (MobileNetV2 x1.0; from scratch the preset builds
    # MobileNetV4-Conv-Small x0.5)
    config = build_config("t", "e", LABELS, image_size=128, init_checkpoint="none", config_overrides={
        "task": {"model": {"backbone": {"mobilenet": {"model_id": "MobileNetV2", "filter_size_scale": 1.0}}}}})
    model = build_task(config.task).build_model()
    for i, v in enumerate(model.variables):
        v.assign(tf.fill(v.shape, tf.cast(0.25 + (i % 7) * 0.01, v.dtype)))
    out = tmp_path_factory.mktemp("init")
    backbone = tf.train.Checkpoint(backbone=model.backbone).write(str(out / "backbone" / "ckpt-1"))
    full = tf.train.Checkpoint(**model.checkpoint_items).write(str(out / "full" / "ckpt-1"))
    return model, backbone, full


@pytest.mark.parametrize("modules", ["backbone", "all"])
def test_restore_into_the_detector(source_checkpoints, modules):
    from odpipe.modeling.detection import build_task
    from odpipe.train import build_config

    source, backbone_ckpt, full_ckpt = source_checkpoints
    prefix = backbone_ckpt if modules == "backbone" else full_ckpt
    config = build_config("t", "e", LABELS, image_size=128, init_checkpoint=prefix, init_checkpoint_modules=modules)
    task = build_task(config.task)
    model = task.build_model()
    task.initialize(model)

    def same(a, b) -> bool:
        return len(a) == len(b) and all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a, b))

    assert same(model.backbone.variables, source.backbone.variables)
    assert same(model.head.variables, source.head.variables) == (modules == "all")
    assert same(model.decoder.variables, source.decoder.variables) == (modules == "all")


def test_restore_that_does_not_fit_is_one_line(source_checkpoints):
    from odpipe.modeling.detection import build_task
    from odpipe.train import build_config

    _, _, full_ckpt = source_checkpoints
    more = {**LABELS, 4: "star"}  # another number of classes: the class head cannot be restored
    config = build_config("t", "e", more, image_size=128, init_checkpoint=full_ckpt, init_checkpoint_modules="all")
    task = build_task(config.task)
    with pytest.raises(UserError, match=r"ckpt-1: cannot restore 'all' into this model .*backbone,decoder") as err:
        task.initialize(task.build_model())
    assert len(str(err.value).splitlines()) == 1


def _cli(args, capsys):
    from odpipe.cli import main

    rc = main(["train", *args])
    return rc, capsys.readouterr().err.strip()


def test_missing_default_checkpoint_stops_with_one_line(records, label_map_path, tmp_path, capsys, monkeypatch):
    from odpipe.train import presets

    missing = str(tmp_path / "published" / "ckpt-180648")
    preset = presets.PRESETS["retinanet-mobilenetv2"]
    monkeypatch.setitem(presets.PRESETS, "retinanet-mobilenetv2", dataclasses.replace(preset, init_checkpoint=missing))
    model_dir = tmp_path / "m"
    rc, err = _cli(["--train", records["train"], "--eval", records["eval"], "--label-map", str(label_map_path),
                    "--model-dir", str(model_dir)], capsys)
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert missing in err and "pretrained" in err and "--init-checkpoint none" in err
    assert not model_dir.exists()  # never a silent fall-back to random weights


def test_published_default_unreachable_offline_is_one_line(records, label_map_path, tmp_path, capsys):
    import tensorflow as tf

    from odpipe.train.presets import MOBILENETV2_IMAGENET

    try:
        reachable = tf.io.gfile.exists(MOBILENETV2_IMAGENET + ".index")
    except tf.errors.OpError:
        reachable = False
    if reachable:
        pytest.skip("this machine can reach the published checkpoint")
    rc, err = _cli(["--train", records["train"], "--eval", records["eval"], "--label-map", str(label_map_path),
                    "--model-dir", str(tmp_path / "m")], capsys)
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err.count(MOBILENETV2_IMAGENET) == 1 and "--init-checkpoint none" in err


def test_start_is_recorded(trained):
    model_dir, result = trained
    assert result["init"] == {"checkpoint": None, "modules": None, "source": "none"}
    assert json.loads((model_dir / "odpipe.json").read_text())["init"]["source"] == "none"
    assert json.loads((model_dir / "train_result.json").read_text())["init"]["source"] == "none"


def test_from_scratch_the_cpu_preset_is_the_light_backbone_and_a_model_dir_brings_its_own(tmp_path):
    """No checkpoint to match: width x0.5 (3.5x faster per step); pretrained: x1.0 (the checkpoint's
    shape); fine-tuning from an odpipe model dir: that model's architecture, from its config.yaml."""
    import tensorflow as tf

    from odpipe.train import build_config, config_to_yaml

    scale = lambda c: c.task.model.backbone.mobilenet.filter_size_scale  # noqa: E731
    scratch = build_config("t", "e", LABELS, init_checkpoint="none")
    assert scale(scratch) == 0.5 and scale(build_config("t", "e", LABELS)) == 1.0
    model_dir = tmp_path / "m"
    prefix = tf.train.Checkpoint(v=tf.Variable(1.0)).write(str(model_dir / "best" / "ckpt-9"))
    (model_dir / "config.yaml").write_text(config_to_yaml(scratch), encoding="utf-8")
    assert scale(build_config("t", "e", LABELS, init_checkpoint=prefix)) == 0.5
    wider = {"task": {"model": {"backbone": {"mobilenet": {"filter_size_scale": 0.75}}}}}
    assert scale(build_config("t", "e", LABELS, init_checkpoint=prefix, config_overrides=wider)) == 0.75  # user wins
