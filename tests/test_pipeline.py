"""The training pipeline: it compiles, the YAML loads back with its components and resources, and
the compiled pipeline runs end to end with the kfp local runner on tiny generated data (real Beam,
real Model Garden steps, real export and COCO evaluation) -- once blessed (published) and once
with a min mAP no model can reach (the gate skips publishing)."""

from __future__ import annotations

import glob
import json
import os

import pytest
import yaml
from kfp import components as kfp_components
from kfp import compiler

from pipelines import training

STAGES = ["annotations-to-csv", "split", "label-map", "records", "records-2", "train", "export", "evaluate", "publish"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    os.environ["GOOGLE_CLOUD_PROJECT"] = "leaky-project-4711"  # must not end up in the YAML
    try:
        out = {}
        for name, pipeline in training.pipelines("reg.example/odpipe:5", "reg.example/odpipe-gpu:5").items():
            path = tmp_path_factory.mktemp("compiled") / f"{name}.yaml"
            compiler.Compiler().compile(pipeline, str(path))
            out[name] = path
        return out
    finally:
        del os.environ["GOOGLE_CLOUD_PROJECT"]


def test_every_pipeline_compiles_and_loads_back(compiled):
    assert list(compiled) == ["odpipe-training"]
    for name, path in compiled.items():
        loaded = kfp_components.load_component_from_file(str(path))
        assert loaded.name == name
        assert {"annotations", "images", "min_map", "accelerator_type", "beam_runner"} <= set(loaded.component_spec.inputs)
        text = path.read_text()
        assert "leaky-project-4711" not in text and "credentials" not in text.lower()


def test_yaml_has_each_component_with_its_resources(compiled):
    spec = yaml.safe_load(compiled["odpipe-training"].read_text())
    executors = spec["deploymentSpec"]["executors"]
    assert sorted(executors) == sorted(f"exec-{s}" for s in STAGES)
    for name, executor in executors.items():
        image = executor["container"]["image"]
        assert image == ("reg.example/odpipe-gpu:5" if name == "exec-train" else "reg.example/odpipe:5")
    train = executors["exec-train"]["container"]["resources"]
    assert train["accelerator"]["resourceType"] == "{{$.inputs.parameters['pipelinechannel--accelerator_type']}}"
    assert train["accelerator"]["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--accelerator_count']}}"
    assert train["resourceMemoryLimit"] == "32G" and train["resourceCpuLimit"] == "8"
    for records in ("exec-records", "exec-records-2"):
        assert executors[records]["container"]["resources"]["resourceMemoryLimit"] == "8G"

    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["records"]["taskInfo"]["name"] == "records-train"
    assert tasks["records-2"]["inputs"]["parameters"]["side"]["runtimeValue"]["constant"] == "eval"
    assert tasks["records"]["inputs"]["parameters"]["dataflow_image"]["runtimeValue"]["constant"] == "reg.example/odpipe:5"
    # the gate: publish runs only inside the condition on evaluate's `blessed` output
    assert "publish" not in tasks
    condition = tasks["condition-1"]
    assert condition["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--evaluate-Output'] == true"
    assert spec["components"]["comp-condition-1"]["dag"]["tasks"]["publish"]["componentRef"]["name"] == "comp-publish"
    # every pipeline parameter is documented for the UIs
    for name, param in spec["root"]["inputDefinitions"]["parameters"].items():
        assert param.get("description"), name


# ------------------------------------------------------------------------------------------ local runs


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from odpipe.sample_data import write_sample_data

    out = tmp_path_factory.mktemp("pipeline-data")
    write_sample_data(str(out), images=12, seed=1)
    return out


def _run(tiny_dataset, work_dir, **extra):
    from odpipe.orchestrate import run_locally

    params = {
        "annotations": str(tiny_dataset / "annotations"),
        "images": str(tiny_dataset / "images"),
        "eval_fraction": 0.34,
        "steps": 2,
        "batch_size": 2,
        "image_size": 128,
        "shards": 1,
        "tflite": False,
        **extra,
    }
    lines = []
    summary = run_locally(params, str(work_dir), echo=lines.append)
    return summary, "\n".join(lines)


@pytest.mark.slow
def test_local_run_of_the_whole_pipeline(tiny_dataset, tmp_path):
    summary, printed = _run(tiny_dataset, tmp_path / "work", publish_to=str(tmp_path / "serving" / "current"))
    assert set(summary["tasks"].values()) == {"done"}, summary["tasks"]
    assert "records-eval" in printed and "publish" in printed
    for side in ("train", "eval"):
        assert glob.glob(os.path.join(summary["records"][side], "records-00000-of-00001.tfrecord"))
        summary_json = json.load(open(os.path.join(summary["records"][side], "records.summary.json")))
        assert summary_json["images"] >= 1
    assert glob.glob(os.path.join(summary["model"], "ckpt-2.index"))
    assert os.path.isfile(os.path.join(summary["model"], "config.yaml"))
    for export in (summary["candidate_export"], summary["export"], str(tmp_path / "serving" / "current")):
        assert os.path.isfile(os.path.join(export, "saved_model", "saved_model.pb")), export
        assert os.path.isfile(os.path.join(export, "label_map.pbtxt")), export
    metrics = summary["metrics"]
    assert {"mAP", "mAP@0.5", "blessed"} <= set(metrics) and metrics["blessed"] is True
    assert 0.0 <= metrics["mAP"] <= 1.0
    report = open(summary["report"], encoding="utf-8").read()
    assert report.lstrip().lower().startswith("<!doctype html") and "data:image/png;base64," in report
    # the HTML artifact is the same self-contained report
    assert open(os.path.join(os.path.dirname(summary["evaluation"]), "report"), encoding="utf-8").read() == report
    assert summary["pipeline"] == str(tmp_path / "work" / "pipeline.yaml") and os.path.isfile(summary["pipeline"])


@pytest.mark.slow
def test_gate_skips_publishing_when_not_blessed(tiny_dataset, tmp_path):
    summary, printed = _run(tiny_dataset, tmp_path / "work", min_map=1.01, steps=1)
    assert summary["tasks"]["publish"] == "skipped (model not blessed)"
    assert all(state == "done" for task, state in summary["tasks"].items() if task != "publish")
    assert summary["blessed"] is False and summary["metrics"]["blessed"] is False
    assert summary["export"] is None
    assert not os.path.exists(os.path.join(summary["run_dir"], "publish"))
    assert os.path.isfile(os.path.join(summary["candidate_export"], "saved_model", "saved_model.pb"))
    assert "skipped (model not blessed)" in printed
