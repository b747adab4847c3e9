"""The prelabel pipeline: compiles like the training pipeline; its component writes labelImg XML for
a folder of new images (real export, real artifacts) that `odpipe csv` reads back."""

from __future__ import annotations

import os
import shutil

import pytest
import yaml
from kfp.dsl import Dataset

from odpipe.errors import UserError


def test_prelabel_pipeline_compiles(tmp_path, capsys):
    from odpipe.cli import main

    out = tmp_path / "prelabel.yaml"
    assert main(["compile", "--pipeline-name", "prelabel", "-o", str(out), "--image", "reg.example/odpipe:5"]) == 0
    assert "compiled prelabel pipeline" in capsys.readouterr().out
    doc = yaml.safe_load(out.read_text())
    assert doc["pipelineInfo"]["name"] == "odpipe-prelabel"
    assert {"images", "model_home", "export", "threshold", "beam_runner"} <= set(doc["root"]["inputDefinitions"]["parameters"])
    images = {e["container"]["image"] for e in doc["deploymentSpec"]["executors"].values()}
    assert images == {"reg.example/odpipe:5"}


def test_prelabel_component_writes_labelimg_files(export_dir, sample_dir, tmp_path):
    from components.stages import build_prelabel
    from odpipe.annotations import xml_to_csv

    new = tmp_path / "new"
    new.mkdir()
    for name in sorted(os.listdir(sample_dir / "images"))[:3]:
        shutil.copy(sample_dir / "images" / name, new / name)
    (new / "broken.jpg").write_text("not an image")
    prelabels = Dataset(uri=str(tmp_path / "prelabels"))
    count = build_prelabel("reg.example/odpipe:5").python_func(
        images=str(new), prelabels=prelabels, export=str(export_dir), threshold=0.0)
    assert count == 3 and prelabels.metadata["unreadable"] == 1 and prelabels.metadata["detections"] > 0
    xml = sorted(os.listdir(tmp_path / "prelabels" / "annotations"))
    assert xml == [n.replace(".jpg", ".xml") for n in sorted(os.listdir(new)) if n != "broken.jpg"]
    report = xml_to_csv(str(tmp_path / "prelabels" / "annotations"), str(tmp_path / "labels.csv"), images_dir=str(new))
    assert report["images"] == 3


def test_prelabel_needs_a_model(tmp_path):
    from odpipe.tasks.predict import model_to_use

    with pytest.raises(UserError, match="needs a model"):
        model_to_use("", "")
    with pytest.raises(UserError, match="no model in service yet"):
        model_to_use("", str(tmp_path))
    assert model_to_use("gs://b/export", "") == ("gs://b/export", "gs://b/export")
