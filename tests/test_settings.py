"""A run's settings: checked before the first task works (one line each), and part of the fingerprint,
so "unchanged" means the same data and the same recipe; the verdict's messages."""

from __future__ import annotations

import errno
import json
import os

import pytest

from odpipe import fingerprint, model_home, storage
from odpipe.errors import UserError
from odpipe.settings import Settings, overrides_kind


def _data(tmp_path):
    ann, img = tmp_path / "ann", tmp_path / "img"
    ann.mkdir()
    img.mkdir()
    (ann / "a.xml").write_text("<annotation><filename>a.jpg</filename></annotation>")
    (img / "a.jpg").write_bytes(b"jpg")
    return str(ann), str(img)


def _export(folder):
    os.makedirs(os.path.join(folder, "saved_model"), exist_ok=True)
    with open(os.path.join(folder, "saved_model", "saved_model.pb"), "wb") as f:
        f.write(b"pb")
    with open(os.path.join(folder, "label_map.pbtxt"), "w", encoding="utf-8") as f:
        f.write('item {\n  id: 1\n  name: "cat"\n}\n')
    with open(os.path.join(folder, "export.json"), "w", encoding="utf-8") as f:
        f.write("{}")
    return str(folder)


def _publish(home, plan, tmp_path):
    keys = ("fingerprint", "data_fingerprint", "settings_fingerprint")
    model_home.publish(home, _export(tmp_path / "e"), {"mAP": 0.4}, {k: plan[k] for k in keys})


def test_overrides_are_a_file_or_yaml_text_by_one_rule():
    assert overrides_kind("overrides.yaml") == overrides_kind("gs://b/o.yaml") == "path"
    assert overrides_kind("conf/my overrides") == "path"
    for text in ("trainer: {train_steps: 5}", "{trainer: {train_steps: 5}}", "task:\n  model: {}\n"):
        assert overrides_kind(text) == "text"


def test_the_settings_that_shape_the_model_are_in_the_fingerprint(tmp_path):
    ann, img = _data(tmp_path)
    home = str(tmp_path / "home")
    base = fingerprint.plan(ann, img, home, settings=Settings(init_checkpoint="none"))
    _publish(home, base, tmp_path)
    assert fingerprint.plan(ann, img, home, settings=Settings(init_checkpoint="none"))["changed"] is False
    lm = tmp_path / "old.pbtxt"
    lm.write_text('item {\n  id: 1\n  name: "cat"\n}\nitem {\n  id: 2\n  name: "dog"\n}\n')
    for change in (dict(model="retinanet-resnet50fpn"), dict(image_size=320), dict(steps=10),
                   dict(config_overrides="trainer: {train_steps: 5}"), dict(existing_label_map=str(lm)),
                   dict(mosaic=0.0)):
        found = fingerprint.plan(ann, img, home, settings=Settings(init_checkpoint="none", **change))
        assert found["changed"] is True and "settings changed since version 0001" in found["message"], change
    # the preset's mosaic (-1, the default) keeps the fingerprint runs had before the parameter existed
    assert Settings().fingerprint() == Settings(mosaic=-1).fingerprint() != Settings(mosaic=0.5).fingerprint()
    # the same label map path with swapped ids is another recipe
    with_map = fingerprint.plan(ann, img, home, settings=Settings(existing_label_map=str(lm)))
    lm.write_text('item {\n  id: 2\n  name: "cat"\n}\nitem {\n  id: 1\n  name: "dog"\n}\n')
    swapped = fingerprint.plan(ann, img, home, settings=Settings(existing_label_map=str(lm)))
    assert swapped["settings_fingerprint"] != with_map["settings_fingerprint"]
    # the gate decides the blessing, it does not shape the model
    gate = fingerprint.plan(ann, img, home, settings=Settings(init_checkpoint="none", min_map=0.5, margin=0.1))
    assert gate["changed"] is False and "force=true retrains" in gate["message"]


def test_after_a_rollback_the_data_is_not_called_new(tmp_path):
    ann, img = _data(tmp_path)
    home = str(tmp_path / "home")
    _publish(home, fingerprint.plan(ann, img, home), tmp_path)
    (tmp_path / "ann" / "b.xml").write_text("<annotation/>")
    _publish(home, fingerprint.plan(ann, img, home), tmp_path)
    model_home.promote(home, "0001")
    again = fingerprint.plan(ann, img, home)
    assert again["changed"] is True and "new data" not in again["message"]
    assert "data unchanged since version 0002 was trained, but version 0001 is in service" in again["message"]


@pytest.mark.parametrize("change, message", [
    (dict(steps=-1), "--steps -1: must be a whole number >= 0"),
    (dict(batch_size=2.5), "--batch-size 2.5: must be a whole number"),
    (dict(eval_fraction=1.0), r"--eval-fraction 1.0: must be a number in \(0, 1\)"),
    (dict(min_map=2), r"--min-map 2: must be a number in \[0, 1\]"),
    (dict(margin=-0.5), r"--margin -0.5: must be a number in \[0, 1\]"),
    (dict(time_budget=-3), "--time-budget -3: must be between 1 and 10080 minutes"),
    (dict(time_budget=0.01), "--time-budget 0.01: must be between 1 and 10080 minutes"),
    (dict(tflite="int4"), "--tflite int4: unknown kind; use one of int8, fp16, float, none"),
    (dict(image_size=300), "--image-size 300: must be a multiple of 32 .e.g. 288."),
    (dict(mosaic=1.5), r"--mosaic 1.5: must be a share in \[0, 1\] .0 off, 1 every training image. or -1 for the preset's"),
    (dict(mosaic=-0.5), r"--mosaic -0.5: must be a share in \[0, 1\]"),
])
def test_numbers_out_of_range_are_one_line(change, message):
    with pytest.raises(UserError, match=message):
        Settings(**change).check_numbers()


def test_files_are_checked(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="nope.pbtxt: label map not found"):
        Settings(existing_label_map=str(tmp_path / "nope.pbtxt")).check_files()
    with pytest.raises(UserError, match="--config-overrides .*missing.yaml: file not found"):
        Settings(config_overrides=str(tmp_path / "missing.yaml")).check_files()

    def read_only(path, text):  # as root every folder is writable: fail the code's own probe instead
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(storage, "write_text", read_only)
    with pytest.raises(UserError, match="home: cannot write to the model home .Permission denied."):
        Settings(model_home=str(tmp_path / "home")).check_files()


def test_the_model_settings_are_checked_by_building_them(tmp_path):
    with pytest.raises(UserError, match="--model retinanet-nope: neither an odpipe preset"):
        Settings(model="retinanet-nope", init_checkpoint="none").check_model()
    with pytest.raises(UserError, match="trainer.no_such_key|no_such_key"):
        Settings(init_checkpoint="none", config_overrides="trainer: {no_such_key: 1}").check_model()
    with pytest.raises(UserError, match="not a checkpoint|no .*checkpoint"):
        Settings(init_checkpoint=str(tmp_path)).check_model()
    Settings(init_checkpoint="none", config_overrides="trainer: {train_steps: 5}").check_model()  # fine
    # warm start wins over the start checkpoint when there is a model in service: nothing to reach
    Settings(init_checkpoint=str(tmp_path / "gone"), warm_start=True).check_model(champion_checkpoint="ckpt-1")


def test_plan_json_round_trip(tmp_path):
    from odpipe.tasks.data import fingerprint_task

    ann, img = _data(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    result = fingerprint_task(ann, img, str(out / "champion"), str(out / "plan"), str(out / "fp"),
                              str(tmp_path / "home"), settings=Settings(init_checkpoint="none"))
    plan = json.loads((out / "plan").read_text())
    assert result.value is True and plan["changed"] is True and plan["fingerprint"] == (out / "fp").read_text()
    assert json.loads((out / "champion").read_text())["version"] is None
    assert result.metadata["champion"] == {"version": "none"} and result.metadata["plan"]["fingerprint"]
    with pytest.raises(UserError, match="--tflite bad"):
        fingerprint_task(ann, img, str(out / "c"), str(out / "p"), str(out / "f"), settings=Settings(tflite="bad"))
