"""The model home: append-only versions, current.json as the commit point, list and promote,
the data fingerprint and its verdicts, and the Model Registry upload at the API boundary."""

from __future__ import annotations

import json
import os

import pytest
from fake_gapic import Operation

from odpipe import fingerprint, model_home, storage
from odpipe.cli import main
from odpipe.errors import UserError


def fake_export(folder, classes=("cat",)):
    os.makedirs(os.path.join(folder, "saved_model", "variables"), exist_ok=True)
    with open(os.path.join(folder, "saved_model", "saved_model.pb"), "wb") as f:
        f.write(b"pb")
    with open(os.path.join(folder, "label_map.pbtxt"), "w", encoding="utf-8") as f:
        f.write("".join(f'item {{\n  id: {i}\n  name: "{c}"\n}}\n' for i, c in enumerate(classes, 1)))
    with open(os.path.join(folder, "export.json"), "w", encoding="utf-8") as f:  # the completion file, last
        json.dump({"classes": list(classes)}, f)
    return str(folder)


def fake_checkpoint(folder, step=7):
    os.makedirs(folder, exist_ok=True)
    for name in (f"ckpt-{step}.index", f"ckpt-{step}.data-00000-of-00001", "ckpt-3.index"):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(name.encode())
    return os.path.join(str(folder), f"ckpt-{step}")


def test_publish_list_promote(tmp_path, capsys):
    home = str(tmp_path / "home")
    assert model_home.read_current(home) is None
    first = model_home.publish(home, fake_export(tmp_path / "e1"), {"mAP": 0.5, "mAP@0.5": 0.8},
                               {"fingerprint": "f1", "data_fingerprint": "d1", "run": "run-1"},
                               checkpoint=fake_checkpoint(tmp_path / "m1" / "best"))
    assert first["version"] == "0001" and first["mAP"] == 0.5 and first["data_fingerprint"] == "d1"
    v1 = tmp_path / "home" / "versions" / "0001"
    assert (v1 / "export" / "saved_model" / "saved_model.pb").read_bytes() == b"pb"
    assert (v1 / "label_map.pbtxt").is_file() and json.loads((v1 / "metrics.json").read_text())["mAP"] == 0.5
    assert sorted(os.listdir(v1 / "checkpoint")) == ["ckpt-7.data-00000-of-00001", "ckpt-7.index"]  # only that step
    champ = model_home.champion(home)
    assert champ["checkpoint"] == storage.join(str(v1), "checkpoint", "ckpt-7") and champ["run"] == "run-1"
    second = model_home.publish(home, fake_export(tmp_path / "e2", ("cat", "dog")), {"mAP": 0.6},
                                {"fingerprint": "f2", "data_fingerprint": "d2"})
    assert second["version"] == "0002"
    doc = json.loads((tmp_path / "home" / "versions" / "0002" / "version.json").read_text())
    assert doc["previous"] == "0001" and doc["checkpoint"] is None

    assert main(["models", "list", home]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("  0001") and out[2].startswith("* 0002") and "0.6000" in out[2]
    assert main(["models", "promote", home, "1"]) == 0
    assert "version 0001 is current" in capsys.readouterr().out
    current = model_home.read_current(home)
    assert current["version"] == "0001" and current["reason"] == "promoted (was 0002)"
    # a promote changes the run fingerprint (the model in service is part of it)
    assert model_home.next_version(home) == "0003"


@pytest.mark.parametrize("argv, message", [
    (["models", "promote", "{home}", "9"], "version 0009 is missing or incomplete (complete versions: 0001)"),
    (["models", "promote", "{missing}", "1"], "no such model home"),
    (["models", "list", "{missing}"], "no model versions here"),
])
def test_models_cli_errors_are_one_line(tmp_path, capsys, argv, message):
    home = str(tmp_path / "home")
    model_home.publish(home, fake_export(tmp_path / "e"), {"mAP": 0.1})
    argv = [a.format(home=home, missing=str(tmp_path / "nope")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0, err


def test_a_publish_killed_before_current_json_leaves_the_home_valid(tmp_path, monkeypatch):
    """Kill the publish at every file operation: current.json always names a complete version,
    the next publish never reuses a started number, and history is never rewritten."""
    home = str(tmp_path / "home")
    model_home.publish(home, fake_export(tmp_path / "e1"), {"mAP": 0.5}, {"data_fingerprint": "d1"})
    before = (tmp_path / "home" / "versions" / "0001" / "version.json").read_text()
    real_write, real_copy = storage.write_bytes, storage.copy_tree

    class Killed(Exception):
        pass

    operations = 0
    while True:
        calls = {"n": 0}

        def counted(real, calls=calls, operations=operations):
            def wrapper(*args, **kwargs):
                calls["n"] += 1
                if calls["n"] > operations:
                    raise Killed()
                return real(*args, **kwargs)
            return wrapper

        monkeypatch.setattr(storage, "create_exclusive", counted(storage.create_exclusive))
        monkeypatch.setattr(storage, "write_bytes", counted(real_write))
        monkeypatch.setattr(storage, "copy_tree", counted(real_copy))
        monkeypatch.setattr(os, "replace", counted(os.replace))
        try:
            model_home.publish(home, fake_export(tmp_path / f"e{operations + 2}", ("cat", "dog")), {"mAP": 0.9},
                               {"data_fingerprint": f"x{operations}"})
            finished = True
        except Killed:
            finished = False
        monkeypatch.undo()
        current = model_home.read_current(home)
        champ = model_home.champion(home)  # raises if current.json named an incomplete version
        assert champ["export"] and storage.exists(storage.join(champ["dir"], "version.json"))
        assert (tmp_path / "home" / "versions" / "0001" / "version.json").read_text() == before
        if finished:
            assert current["version"] != "0001"
            break
        assert current["version"] == "0001"
        operations += 1
    listed = model_home.list_versions(home)
    assert [v["complete"] for v in listed][-1] is True and not all(v["complete"] for v in listed)
    numbers = [v["version"] for v in listed]
    # a kill before the first file creates nothing; every later one leaves a folder whose number is never reused
    assert numbers == sorted(set(numbers)) and len(numbers) == operations + 1
    assert operations >= 4  # the kill really landed between the version's files and current.json


def test_publish_refuses_an_empty_export(tmp_path):
    with pytest.raises(UserError, match="export folder is empty or missing"):
        model_home.publish(str(tmp_path / "home"), str(tmp_path / "missing"), {"mAP": 0.1})


def _data(tmp_path):
    ann, img = tmp_path / "ann", tmp_path / "img"
    ann.mkdir(exist_ok=True)
    img.mkdir(exist_ok=True)
    (ann / "a.xml").write_text("<annotation/>")
    (img / "a.jpg").write_bytes(b"jpg")
    return str(ann), str(img)


def test_fingerprint_changes_with_the_data_and_the_model_in_service(tmp_path):
    ann, img = _data(tmp_path)
    home = str(tmp_path / "home")
    first = fingerprint.plan(ann, img, home)
    assert first["changed"] and "no model in service yet" in first["message"] and not first["champion"]
    assert fingerprint.plan(ann, img, home)["fingerprint"] == first["fingerprint"]  # stable
    (tmp_path / "ann" / "b.xml").write_text("<annotation/>")
    grown = fingerprint.plan(ann, img, home)
    assert grown["data_fingerprint"] != first["data_fingerprint"]
    (tmp_path / "img" / "a.jpg").write_bytes(b"JPG!")  # same name, new content (size)
    assert fingerprint.plan(ann, img, home)["data_fingerprint"] != grown["data_fingerprint"]

    now = fingerprint.plan(ann, img, home)
    model_home.publish(home, fake_export(tmp_path / "e"), {"mAP": 0.4},
                       {"fingerprint": now["fingerprint"], "data_fingerprint": now["data_fingerprint"],
                        "settings_fingerprint": now["settings_fingerprint"]})
    same = fingerprint.plan(ann, img, home)
    assert same["changed"] is False and "data and settings unchanged since version 0001" in same["message"]
    assert "min_map and margin are not compared" in same["message"]
    assert same["champion"].export.endswith(os.path.join("versions", "0001", "export"))
    assert same["champion"].version == "0001"
    assert same["fingerprint"] != now["fingerprint"]  # the model in service is part of it
    assert fingerprint.plan(ann, img, home, force=True)["changed"] is True

    (tmp_path / "ann" / "c.xml").write_text("<annotation/>")
    changed = fingerprint.plan(ann, img, home)
    assert changed["changed"] and "champion is version 0001" in changed["message"]
    model_home.record_attempt(home, changed["fingerprint"], {"reasons": ["mAP 0.3 < the champion's 0.4"]})
    tried = fingerprint.plan(ann, img, home)
    assert tried["changed"] is False and "was not blessed (mAP 0.3 < the champion's 0.4)" in tried["message"]


def test_fingerprint_of_a_missing_folder_is_a_one_line_error(tmp_path):
    ann, _ = _data(tmp_path)
    with pytest.raises(UserError, match="--images .*folder is empty or missing"):
        fingerprint.plan(ann, str(tmp_path / "nope"))


def test_fingerprint_and_home_on_gcs(gcs_bucket, tmp_path):
    ann, img = _data(tmp_path)
    remote = f"{gcs_bucket}/fp"
    storage.copy_tree(ann, f"{remote}/ann")
    storage.copy_tree(img, f"{remote}/img")
    home = f"{remote}/home"
    first = fingerprint.plan(f"{remote}/ann", f"{remote}/img", home)
    assert first["changed"] and first["image_files"] == 1 and first["bytes"] == len("<annotation/>") + 3
    model_home.publish(home, fake_export(tmp_path / "e"), {"mAP": 0.4},
                       {"fingerprint": first["fingerprint"], "data_fingerprint": first["data_fingerprint"]})
    assert fingerprint.plan(f"{remote}/ann", f"{remote}/img", home)["changed"] is False
    storage.write_text(f"{remote}/ann/b.xml", "<annotation/>")
    assert fingerprint.plan(f"{remote}/ann", f"{remote}/img", home)["changed"] is True
    assert model_home.promote(home, "0001")["version"] == "0001"


# -- Vertex AI Model Registry, at the API boundary ------------------------------------------------


@pytest.fixture
def model_service(monkeypatch):
    """Records the requests google-cloud-aiplatform's ModelServiceClient would send; no network."""
    import google.auth
    from google.api_core import exceptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.aiplatform_v1.services.model_service import ModelServiceClient
    from google.cloud.aiplatform_v1.types import model as gca_model
    from google.cloud.aiplatform_v1.types import model_service

    sent = {"get": [], "upload": []}
    existing = set()
    for name in ("GOOGLE_CLOUD_PROJECT", "CLOUD_ML_PROJECT_ID"):  # else the SDK looks the project up online
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(google.auth, "default", lambda *a, **k: (AnonymousCredentials(), "default-project"))

    def get_model(self, request=None, name=None, **kwargs):
        name = name or request.name
        sent["get"].append(name)
        base = name.split("@")[0]
        if base not in existing:
            raise exceptions.NotFound(f"{name} not found")
        return gca_model.Model(name=base, display_name="m", version_id="2", version_aliases=["default"])

    def upload_model(self, request=None, **kwargs):
        sent["upload"].append(request)
        name = f"{request.parent}/models/{request.model_id or 'raccoon'}"
        existing.add(name)
        return Operation(model_service.UploadModelResponse(model=name, model_version_id="2"))

    monkeypatch.setattr(ModelServiceClient, "get_model", get_model)
    monkeypatch.setattr(ModelServiceClient, "upload_model", upload_model)
    sent["existing"] = existing
    return sent


def test_registry_upload_creates_then_adds_versions(model_service):
    from odpipe import registry

    result = registry.upload_version("raccoon", "gs://b/home/versions/0001/export/saved_model", "my-proj",
                                     "europe-west4", "0001", {"mAP": 0.6123}, "ab12cd34ef")
    request = model_service["upload"][0]
    assert request.parent == "projects/my-proj/locations/europe-west4"
    assert request.model_id == "raccoon" and not request.parent_model  # the first version creates it
    assert request.model.artifact_uri == "gs://b/home/versions/0001/export/saved_model"
    assert request.model.container_spec.image_uri == registry.SERVING_IMAGE
    assert dict(request.model.labels) == {"odpipe_version": "0001", "fingerprint": "ab12cd34ef", "map": "0_6123"}
    assert list(request.model.version_aliases) == ["odpipe-v0001", "default"]  # default: the serving version
    assert result["model"] == "projects/my-proj/locations/europe-west4/models/raccoon"

    registry.upload_version("raccoon", "gs://b/home/versions/0002/export/saved_model", "my-proj", "europe-west4",
                            "0002", {"mAP": 0.7}, "ff00")
    again = model_service["upload"][1]
    assert again.parent_model == "projects/my-proj/locations/europe-west4/models/raccoon"  # a new version of it
    assert list(again.model.version_aliases) == ["odpipe-v0002", "default"]


def test_registry_needs_a_bucket_and_a_project(model_service):
    from odpipe import registry

    with pytest.raises(UserError, match="use a gs:// --model-home"):
        registry.upload_version("m", "/local/saved_model", "p", "r", "0001", {"mAP": 0.1}, "f")
    with pytest.raises(UserError, match="registry_project, registry_location"):
        registry.upload_version("m", "gs://b/saved_model", "", "", "0001", {"mAP": 0.1}, "f")
    assert model_service["upload"] == []


def test_warm_start_restores_by_label_map_and_brings_the_architecture(tmp_path):
    """A warm start restores everything when the classes are the same, else backbone + decoder;
    the version's config.yaml lies beside its checkpoint, so the trainer rebuilds that architecture
    (a scratch-trained x0.5 backbone stays x0.5)."""
    from odpipe.label_map import format_label_map
    from odpipe.train.config import checkpoint_architecture

    home = str(tmp_path / "home")
    export = fake_export(tmp_path / "e", ("cat", "dog"))
    with open(os.path.join(export, "config.yaml"), "w", encoding="utf-8") as f:
        f.write("task:\n  model:\n    num_classes: 3\n    backbone:\n      mobilenet:\n        filter_size_scale: 0.5\n"
                "    head:\n      num_filters: 64\n    input_size: [128, 128, 3]\n")
    model_home.publish(home, export, {"mAP": 0.5}, checkpoint=fake_checkpoint(tmp_path / "m" / "best"))
    checkpoint = model_home.champion(home)["checkpoint"]
    same = tmp_path / "same.pbtxt"
    same.write_text(format_label_map({1: "cat", 2: "dog"}), encoding="utf-8")
    grown = tmp_path / "grown.pbtxt"
    grown.write_text(format_label_map({1: "cat", 2: "dog", 3: "owl"}), encoding="utf-8")
    assert model_home.warm_start_modules(checkpoint, str(same)) == "all"
    assert model_home.warm_start_modules(checkpoint, str(grown)) == "backbone,decoder"
    assert checkpoint_architecture(checkpoint) == {"backbone": {"mobilenet": {"filter_size_scale": 0.5}},
                                                   "head": {"num_filters": 64}}


def test_data_fingerprint_sees_an_xml_edited_in_place_and_ignores_other_files(tmp_path):
    """An XML rewritten with its size and modification time restored is new data (its content is
    hashed); files that are neither images nor XML, and hidden XMLs (the annotations stage skips
    them), leave the fingerprint as it is."""
    ann, img = _data(tmp_path)
    xml = tmp_path / "ann" / "a.xml"
    xml.write_text("<annotation><object><name>cat</name></object></annotation>")
    before = fingerprint.data_fingerprint(ann, img)
    stat = os.stat(xml)
    xml.write_text("<annotation><object><name>dog</name></object></annotation>")  # same size
    os.utime(xml, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(xml).st_size == stat.st_size
    edited = fingerprint.data_fingerprint(ann, img)
    assert edited["data_fingerprint"] != before["data_fingerprint"]
    for junk in ("ann/.DS_Store", "ann/notes.txt", "ann/.hidden.xml", "img/.DS_Store", "img/notes.txt", "img/x.json"):
        (tmp_path / junk).write_text("junk")
    assert fingerprint.data_fingerprint(ann, img) == edited
    (tmp_path / "img" / "b.PNG").write_bytes(b"png")  # an image, any case
    grown = fingerprint.data_fingerprint(ann, img)
    assert grown["image_files"] == 2 and grown["data_fingerprint"] != edited["data_fingerprint"]


def test_data_fingerprint_on_gcs_uses_the_objects_checksums(gcs_bucket, tmp_path, monkeypatch):
    """On gs:// an image rewritten with the same size and the same update time still changes the
    fingerprint: the listing's CRC32C/MD5 are part of it."""
    ann, img = _data(tmp_path)
    remote = f"{gcs_bucket}/fp-crc/{tmp_path.name}"
    storage.copy_tree(ann, f"{remote}/ann")
    storage.copy_tree(img, f"{remote}/img")
    storage.write_text(f"{remote}/img/notes.txt", "ignored")
    real = storage.stat_checksums

    def frozen_times(folder, **kwargs):  # the same size and update time for every object
        return [(rel, size, 0.0, checksum) for rel, size, _, checksum in real(folder, **kwargs)]

    monkeypatch.setattr(storage, "stat_checksums", frozen_times)
    first = fingerprint.data_fingerprint(f"{remote}/ann", f"{remote}/img")
    assert first["image_files"] == 1 and first["annotation_files"] == 1
    storage.write_bytes(f"{remote}/img/a.jpg", b"JPG")  # same size, new content
    assert fingerprint.data_fingerprint(f"{remote}/ann", f"{remote}/img")["data_fingerprint"] != first["data_fingerprint"]
