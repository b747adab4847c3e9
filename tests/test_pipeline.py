"""The training pipeline: it compiles, the YAML loads back with its components, resources, cache
and retry settings, and the pipeline runs end to end with the kfp local runner on tiny generated
data (real Beam, real Model Garden steps, real export and COCO evaluation): the retraining loop,
run again and again against one model home, and the gate skipping a publish."""

from __future__ import annotations

import glob
import json
import os

import pytest
import yaml
from kfp import compiler
from kfp import components as kfp_components

from pipelines import training

STAGES = ["fingerprint", "annotations-to-csv", "split", "label-map", "data-report", "records", "records-2", "train", "export",
          "evaluate", "publish", "register"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    os.environ["GOOGLE_CLOUD_PROJECT"] = "leaky-project-4711"  # must not end up in the YAML
    try:
        out = {}
        # Kubeflow: the trainer is a pod with resources (on Vertex AI a CustomJob: tests/test_platform.py)
        for name, pipeline in training.pipelines("reg.example/odpipe:5", "reg.example/odpipe-gpu:5", "kubeflow").items():
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
    spec = next(yaml.safe_load_all(compiled["odpipe-training"].read_text()))
    executors = spec["deploymentSpec"]["executors"]
    assert sorted(executors) == sorted(f"exec-{s}" for s in STAGES)
    for name, executor in executors.items():
        image = executor["container"]["image"]
        assert image == ("reg.example/odpipe-gpu:5" if name == "exec-train" else "reg.example/odpipe:5")
    train = executors["exec-train"]["container"]["resources"]
    assert train["accelerator"]["resourceType"] == "{{$.inputs.parameters['pipelinechannel--accelerator_type']}}"
    assert spec["root"]["inputDefinitions"]["parameters"]["accelerator_type"]["defaultValue"] == "nvidia.com/gpu"
    assert train["accelerator"]["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--accelerator_count']}}"
    assert train["resourceMemoryLimit"] == "32G" and train["resourceCpuLimit"] == "8"
    for records in ("exec-records", "exec-records-2"):
        assert executors[records]["container"]["resources"]["resourceMemoryLimit"] == "8G"

    root = spec["root"]["dag"]["tasks"]
    components = spec["components"]
    # the fingerprint task looks at the folders every run; everything else sits under its verdict
    assert sorted(root) == ["condition-1", "fingerprint"]
    assert root["fingerprint"].get("cachingOptions", {}).get("enableCache") in (None, False)
    changed = root["condition-1"]
    assert changed["taskInfo"]["name"] == "data-changed" and changed["dependentTasks"] == ["fingerprint"]
    assert changed["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--fingerprint-Output'] == true"
    tasks = components["comp-condition-1"]["dag"]["tasks"]
    assert sorted(tasks) == sorted(["annotations-to-csv", "split", "label-map", "data-report", "records", "records-2", "train",
                                    "export", "evaluate", "condition-2"])
    for name, task in tasks.items():
        if name != "condition-2":
            assert task["cachingOptions"]["enableCache"] is True, name  # cached: the fingerprint keys them
    csv_inputs = tasks["annotations-to-csv"]["inputs"]["parameters"]["fingerprint"]
    assert csv_inputs["componentInputParameter"] == "pipelinechannel--fingerprint-fingerprint"
    assert tasks["train"]["retryPolicy"]["maxRetryCount"] == 3 and tasks["train"]["retryPolicy"]["backoffDuration"] == "60s"
    assert tasks["records"]["retryPolicy"]["maxRetryCount"] == 2
    assert "data-report" in tasks["train"]["dependentTasks"]  # data_checks=fail stops the run before training
    assert tasks["records"]["taskInfo"]["name"] == "records-train"
    assert tasks["records-2"]["inputs"]["parameters"]["side"]["runtimeValue"]["constant"] == "eval"
    assert tasks["records"]["inputs"]["parameters"]["dataflow_image"]["runtimeValue"]["constant"] == "reg.example/odpipe:5"
    # the champion is one artifact of the fingerprint task, taken by the tasks that need it
    for task in ("label-map", "train", "evaluate"):
        champion = tasks[task]["inputs"]["artifacts"]["champion"]
        assert champion == {"componentInputArtifact": "pipelinechannel--fingerprint-champion"}, task
    assert components["comp-fingerprint"]["outputDefinitions"]["artifacts"]["champion"]["artifactType"][
        "schemaTitle"] == "system.Artifact"
    fingerprint_outputs = components["comp-fingerprint"]["outputDefinitions"]
    assert sorted(fingerprint_outputs["parameters"]) == ["Output", "fingerprint"]
    assert sorted(fingerprint_outputs["artifacts"]) == ["champion", "plan"]
    # every setting the first task checks is wired to it
    fp_inputs = root["fingerprint"]["inputs"]["parameters"]
    assert {"model", "steps", "init_checkpoint", "config_overrides", "min_map", "tflite"} <= set(fp_inputs)
    # the gate: publish runs only inside the condition on evaluate's `blessed` output
    blessed = tasks["condition-2"]
    assert blessed["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--evaluate-Output'] == true"
    inner = components["comp-condition-2"]["dag"]["tasks"]
    assert inner["publish"]["componentRef"]["name"] == "comp-publish"
    registry = inner["condition-3"]
    assert registry["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--registry_model'] != ''"
    assert components["comp-condition-3"]["dag"]["tasks"]["register"]["componentRef"]["name"] == "comp-register"
    # every pipeline parameter is documented for the UIs
    for name, param in spec["root"]["inputDefinitions"]["parameters"].items():
        assert param.get("description"), name


def test_each_target_carries_only_its_own_accelerator_names(tmp_path):
    """Kubeflow gets a Kubernetes resource name as the default, Vertex a Vertex name, local none."""
    for target, expected in (("kubeflow", "nvidia.com/gpu"), ("vertex", "NVIDIA_TESLA_T4")):
        path = tmp_path / f"{target}.yaml"
        compiler.Compiler().compile(training.build_pipeline("r.example/o:1", "r.example/g:1", target=target), str(path))
        text = path.read_text()
        spec = next(yaml.safe_load_all(text))
        assert spec["root"]["inputDefinitions"]["parameters"]["accelerator_type"]["defaultValue"] == expected
        if target == "kubeflow":
            assert "NVIDIA_TESLA" not in text and "NVIDIA_L4" not in text
        kfp_components.load_component_from_file(str(path))
    local = tmp_path / "local.yaml"
    compiler.Compiler().compile(training.build_pipeline(target="local"), str(local))
    assert "accelerator" not in yaml.safe_load(local.read_text())["deploymentSpec"]["executors"]["exec-train"][
        "container"].get("resources", {})
    with pytest.raises(ValueError, match="target 'gke'"):
        training.build_pipeline(target="gke")


# ------------------------------------------------------------------------------------------ local runs


def _run(data, work_dir, **extra):
    from launch.local import print_result, run_locally

    params = {
        "annotations": str(data / "annotations"),
        "images": str(data / "images"),
        "eval_fraction": 0.34,
        "steps": 2,
        "batch_size": 2,
        "image_size": 128,
        "shards": 1,
        "tflite": "none",
        "init_checkpoint": "none",  # offline: the preset's pretrained default is out of reach
        **extra,
    }
    lines = []
    summary = run_locally(params, str(work_dir), echo=lines.append)
    print_result(summary, echo=lines.append)
    return summary, "\n".join(lines)


# Enough real steps at 128 px for a model that finds some objects (a fair champion), kept short.
LEARN = dict(steps=120, batch_size=4, config_overrides=(
    "task:\n  model:\n    detection_generator:\n      pre_nms_score_threshold: 0.001\n"
    "trainer:\n  optimizer_config:\n    learning_rate:\n      cosine:\n        initial_learning_rate: 0.08\n"))


def fingerprint_plan(data, home, params):
    from odpipe.fingerprint import plan
    from odpipe.settings import Settings

    base = {"eval_fraction": 0.34, "steps": 2, "batch_size": 2, "image_size": 128, "tflite": "none",
            "init_checkpoint": "none"}
    return plan(str(data / "annotations"), str(data / "images"), str(home), settings=Settings(**{**base, **params}))


def _grow(data, extra_dir, new_class):
    """More annotations in the same folders: new images, one of the old classes renamed to a new one."""
    import shutil

    for xml in sorted((extra_dir / "annotations").glob("*.xml")):
        stem = "more_" + xml.stem
        shutil.copyfile(extra_dir / "images" / f"{xml.stem}.jpg", data / "images" / f"{stem}.jpg")
        text = xml.read_text(encoding="utf-8").replace(f"{xml.stem}.jpg", f"{stem}.jpg")
        (data / "annotations" / f"{stem}.xml").write_text(text.replace("<name>triangle</name>", f"<name>{new_class}</name>"),
                                                         encoding="utf-8")


@pytest.mark.slow
def test_the_retraining_loop_against_one_model_home(tmp_path, capsys):
    """Run 1 publishes 0001; an unchanged rerun is skipped in seconds; run 2 (more data, one new
    class) keeps the old ids and scores champion and challenger on the same records; run 3 (a
    deliberately worse challenger) is not blessed and leaves current.json alone; promote rolls back."""
    import shutil

    from odpipe.cli import main
    from odpipe.label_map import read_label_map
    from odpipe.sample_data import write_sample_data

    data, extra, home = tmp_path / "data", tmp_path / "extra", tmp_path / "home"
    write_sample_data(str(data), images=14, seed=1)
    write_sample_data(str(extra), images=8, seed=2)

    # run 1: an empty home; blessed by min_map alone
    one, printed = _run(data, tmp_path / "w", model_home=str(home), **LEARN)
    assert one["blessed"] is True and one["metrics"]["champion"] is None, printed
    assert one["published"]["version"] == "0001" and "no model in service yet" in printed
    current = json.loads((home / "current.json").read_text())
    assert current["version"] == "0001" and current["mAP"] == pytest.approx(one["metrics"]["mAP"])
    v1 = home / "versions" / "0001"
    assert (v1 / "export" / "saved_model" / "saved_model.pb").is_file() and (v1 / "label_map.pbtxt").is_file()
    version = json.loads((v1 / "version.json").read_text())
    assert version["fingerprint"] == one["plan"]["fingerprint"] and version["run"]
    assert version["data_fingerprint"] == current["data_fingerprint"] and version["checkpoint"].startswith("checkpoint/")
    assert json.loads((v1 / "metrics.json").read_text())["fingerprint"] == one["plan"]["fingerprint"]
    first_ids = read_label_map(str(v1 / "label_map.pbtxt"))
    assert set(one["tasks"].values()) == {"done", "skipped (no registry model)"}, one["tasks"]
    for side in ("train", "eval"):
        assert glob.glob(os.path.join(one["records"][side], "**", "*.tfrecord"), recursive=True)
    assert glob.glob(os.path.join(one["model"], "ckpt-*.index"))
    report = open(one["report"], encoding="utf-8").read()
    assert report.lstrip().lower().startswith("<!doctype html") and "data:image/png;base64," in report
    assert one["data_report"] and f"data report: {one['data_report']}" in printed
    assert (home / "versions" / "0001" / "data_stats.json").is_file()  # run 2's drift is measured against it
    assert open(os.path.join(os.path.dirname(one["evaluation"]), "report"), encoding="utf-8").read() == report
    assert one["pipeline"] == str(tmp_path / "w" / "pipeline.yaml") and os.path.isfile(one["pipeline"])

    # the same data again: nothing to do, and it says so
    same, printed = _run(data, tmp_path / "w", model_home=str(home), **LEARN)
    assert same["plan"]["changed"] is False and "data and settings unchanged since version 0001" in printed
    assert {s for t, s in same["tasks"].items() if t != "fingerprint"} == {"skipped (data unchanged)"}
    assert sorted(os.listdir(home / "versions")) == ["0001"]

    # run 2: more annotations, one new class; warm start from the champion
    _grow(data, extra, "hexagon")
    two, printed = _run(data, tmp_path / "w", model_home=str(home), warm_start=True, init_checkpoint="default", **LEARN)
    metrics = two["metrics"]
    champion = metrics["champion"]
    assert champion["version"] == "0001" and champion["unseen_classes"] == ["hexagon"], printed
    assert champion["per_class"]["hexagon"]["AP"] in (0.0, None)  # never seen: AP 0 where it has ground truth
    assert set(champion["per_class"]) == set(metrics["per_class"])  # the same classes, the same records
    assert champion["mAP"] is not None and champion["mAP"] > 0, "the champion must find objects for run 3 to mean anything"
    assert "warm start from the model in service" in capsys.readouterr().out
    ids = read_label_map(os.path.join(two["label_map"]))
    assert {k: v for k, v in ids.items() if v in first_ids.values()} == first_ids and ids[max(ids)] == "hexagon"
    report = open(two["report"], encoding="utf-8").read()
    assert "Challenger vs champion" in report
    if two["blessed"]:
        assert two["published"]["version"] == "0002"
        assert json.loads((home / "current.json").read_text())["version"] == "0002"
    else:
        assert not (home / "versions" / "0002").exists()
    in_service = json.loads((home / "current.json").read_text())

    # run 3: a deliberately worse challenger (one step from scratch) on the same data
    three, printed = _run(data, tmp_path / "w", model_home=str(home), force=True, steps=1, batch_size=2, mosaic=0.0,
                          config_overrides=LEARN["config_overrides"])
    # the mosaic parameter reaches the trainer: the preset's share in run 1, the one given here
    assert [json.loads(open(os.path.join(run["model"], "train_result.json")).read())["mosaic"]
            for run in (one, three)] == [0.5, 0.0]
    assert three["blessed"] is False and three["metrics"]["champion"]["version"] == in_service["version"], printed
    assert three["metrics"]["mAP"] < three["metrics"]["champion"]["mAP"]
    assert three["tasks"]["publish"] == three["tasks"]["register"] == "skipped (model not blessed)"  # the gate
    assert not os.path.exists(os.path.join(three["run_dir"], "publish")) and three["export"] is None
    assert os.path.isfile(os.path.join(three["candidate_export"], "saved_model", "saved_model.pb"))
    assert "skipped (model not blessed)" in printed and "none published (not blessed)" in printed
    assert json.loads((home / "current.json").read_text()) == in_service
    # the attempt is remembered: the same data and settings against the same champion are not retrained again
    worse = dict(steps=1, batch_size=2, mosaic=0.0, config_overrides=LEARN["config_overrides"])
    again, printed = _run(data, tmp_path / "w", model_home=str(home), **worse)
    assert again["plan"]["changed"] is False and "was not blessed" in printed, printed
    # other settings are another recipe: they are not "unchanged" (issue 15: the fingerprint holds them)
    assert fingerprint_plan(data, home, dict(worse, image_size=160))["changed"] is True

    # rollback
    assert main(["models", "promote", str(home), "0001"]) == 0
    assert json.loads((home / "current.json").read_text())["version"] == "0001"
    assert main(["models", "list", str(home)]) == 0
    listing = capsys.readouterr().out
    assert "* 0001" in listing
    shutil.rmtree(tmp_path / "w")
