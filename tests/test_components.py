"""KFP components: their interface, and their bodies run on real artifacts (`.python_func`).

The expensive stages (train, export, evaluate) run for real in the kfp.local whole-pipeline test
(tests/test_pipeline.py); here the data stages and publish run on tiny data.
"""

from __future__ import annotations

import csv
import glob
import inspect
import json
import os

import pytest
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Markdown, Metrics, Model

from components import stages
from odpipe.champion import Champion
from odpipe.errors import UserError


@pytest.fixture(scope="module")
def comps():
    return stages.build("registry.example/odpipe:test", "registry.example/odpipe-gpu:test")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from odpipe.sample_data import write_sample_data

    out = tmp_path_factory.mktemp("tiny")
    write_sample_data(str(out), images=10, seed=3)
    return out


def artifact(kind, path, **metadata):
    a = kind(uri=str(path))
    a.metadata.update(metadata)
    return a


def test_images_are_chosen_by_build_not_environment(comps, monkeypatch):
    for name, comp in comps.all().items():
        image = comp.component_spec.implementation.container.image
        assert image == ("registry.example/odpipe-gpu:test" if name == "train" else "registry.example/odpipe:test")
    monkeypatch.setenv("ODPIPE_IMAGE", "elsewhere/x:1")
    default = stages.build()
    import odpipe

    assert default.split.component_spec.implementation.container.image == f"odpipe:{odpipe.__version__}"
    assert default.train.component_spec.implementation.container.image == f"odpipe-gpu:{odpipe.__version__}"


def test_components_are_thin_lightweight_wrappers(comps):
    for name, comp in comps.all().items():
        body = inspect.getsource(comp.python_func).split('"""', 2)[2].strip().splitlines()
        calls = [line for line in body if "_task(" in line]
        assert len(body) <= 12 and len(calls) == 1, f"{name}: a component is one call of an odpipe.tasks function"
        container = comp.component_spec.implementation.container
        command = " ".join(container.command)
        assert "kfp.dsl.executor_main" in command, name  # lightweight: runs under kfp.local too
        assert "pip install" not in command, name  # the image already has odpipe and kfp
        source = command.split("ephemeral_component.py", 1)[-1]
        assert "from odpipe" in source, name


def test_every_argument_is_documented(comps):
    for name, comp in comps.all().items():
        spec = comp.component_spec
        assert spec.description, name
        for io_name, io in (spec.inputs or {}).items():
            assert io.description, f"{name}.{io_name} has no docstring"
        # KFP keeps no description for outputs; check the Google-style Args: section names them
        doc = comp.python_func.__doc__
        for io_name in spec.outputs or {}:
            if io_name != "Output":  # the return value, documented under Returns:
                assert f"\n        {io_name}: " in doc, f"{name}.{io_name} has no docstring"
        if "Output" in (spec.outputs or {}):
            assert "Returns:" in doc


def test_artifact_types(comps):
    def kinds(comp, side):
        return {k: v.type for k, v in (getattr(comp.component_spec, side) or {}).items()}

    assert kinds(comps.annotations_to_csv, "outputs")["labels"] == "system.Dataset@0.0.1"
    assert kinds(comps.annotations_to_csv, "outputs")["stats"] == "system.Metrics@0.0.1"
    assert kinds(comps.train, "outputs")["model"] == "system.Model@0.0.1"
    assert kinds(comps.evaluate, "outputs")["report"] == "system.HTML@0.0.1"
    assert kinds(comps.evaluate, "outputs")["metrics"] == "system.Metrics@0.0.1"
    assert kinds(comps.evaluate, "outputs")["Output"] == "Boolean"
    # the pipeline UIs draw these natively; GCPC's deploy / batch-prediction components take the registry model
    assert kinds(comps.evaluate, "outputs")["confusion"] == "system.ClassificationMetrics@0.0.1"
    assert kinds(comps.evaluate, "outputs")["summary"] == "system.Markdown@0.0.1"
    assert kinds(comps.register, "outputs")["model"] == "google.VertexModel@0.0.1"
    assert kinds(comps.publish, "inputs")["exported"] == "system.Model@0.0.1"


def kubeflow(kind, tmp_path, name, **metadata):
    """An artifact as KFP's launcher hands it on Kubeflow: a minio:// URI (no file layer here speaks
    it) with a local path that the launcher syncs (the test's stand-in for /minio/...)."""
    a = kind(uri=f"minio://mlpipeline/v2/artifacts/odpipe-training/run-1/{name}")
    a.custom_path = str(tmp_path / "minio" / name)
    os.makedirs(os.path.dirname(a.path), exist_ok=True)
    a.metadata.update(metadata)
    return a


@pytest.mark.slow
def test_every_component_on_kubeflow_artifacts(comps, tiny_data, tmp_path):
    """The whole chain, component by component, with minio:// artifacts: each reads and writes its
    artifacts through the local path, and nothing is written under a folder named minio: here."""
    home = str(tmp_path / "home")
    art = {n: kubeflow(k, tmp_path, n) for n, k in (
        ("champion", Artifact), ("plan", Artifact), ("labels", Dataset), ("report", Dataset), ("stats", Metrics),
        ("splits", Dataset), ("label_map", Dataset), ("train", Dataset), ("eval", Dataset), ("model", Model),
        ("train_metrics", Metrics), ("exported", Model), ("metrics", Metrics), ("evaluation", Dataset),
        ("html", HTML), ("published", Model), ("data_html", HTML), ("data_stats", Dataset), ("data_metrics", Metrics),
        ("confusion", ClassificationMetrics), ("summary", Markdown))}
    fp_file = str(tmp_path / "minio" / "fingerprint")
    train = dict(steps=2, batch_size=2, image_size=128, init_checkpoint="none")
    changed = comps.fingerprint.python_func(annotations=str(tiny_data / "annotations"), images=str(tiny_data / "images"),
                                            champion=art["champion"], plan=art["plan"], fingerprint=fp_file,
                                            model_home=home, tflite="none", **train)
    assert changed is True and art["champion"].metadata["version"] == "none"
    fp = open(fp_file, encoding="utf-8").read()
    assert json.loads(open(art["plan"].path, encoding="utf-8").read())["fingerprint"] == fp
    comps.annotations_to_csv.python_func(annotations=str(tiny_data / "annotations"), images=str(tiny_data / "images"),
                                         labels=art["labels"], report=art["report"], stats=art["stats"], fingerprint=fp)
    assert art["labels"].metadata["images"] == 10 and art["stats"].metadata["images"] == 10
    comps.split.python_func(labels=art["labels"], splits=art["splits"], images=str(tiny_data / "images"),
                            eval_fraction=0.3, seed=1)
    assert sorted(os.listdir(art["splits"].path)) == ["eval.csv", "train.csv"]
    comps.label_map.python_func(labels=art["labels"], champion=art["champion"], label_map=art["label_map"])
    comps.data_report.python_func(labels=art["labels"], splits=art["splits"], champion=art["champion"],
                                  report=art["data_html"], data_stats=art["data_stats"],
                                  data_metrics=art["data_metrics"], images=str(tiny_data / "images"), image_size=128)
    assert art["data_metrics"].metadata["images"] == 10 and "errors" in art["data_stats"].metadata
    assert os.path.isfile(os.path.join(art["data_stats"].path, "data_stats.json"))
    assert "<img" in open(art["data_html"].path, encoding="utf-8").read()
    for side in ("train", "eval"):
        comps.records.python_func(splits=art["splits"], label_map=art["label_map"], images=str(tiny_data / "images"),
                                  records=art[side], side=side, shards=1)
        assert art[side].metadata["pattern"] == os.path.join(art[side].path, "records-*.tfrecord")
    comps.train.python_func(train_records=art["train"], eval_records=art["eval"], label_map=art["label_map"],
                            champion=art["champion"], model=art["model"], train_metrics=art["train_metrics"],
                            steps=2, batch_size=2, image_size=128, init_checkpoint="none")
    assert art["train_metrics"].metadata["step"] == 2 and os.path.isfile(os.path.join(art["model"].path, "config.yaml"))
    comps.export.python_func(model=art["model"], calibration_records=art["train"], exported=art["exported"], tflite="none")
    assert os.path.isfile(os.path.join(art["exported"].path, "saved_model", "saved_model.pb"))
    blessed = comps.evaluate.python_func(exported=art["exported"], eval_records=art["eval"], champion=art["champion"],
                                         metrics=art["metrics"], evaluation=art["evaluation"], report=art["html"],
                                         confusion=art["confusion"], summary=art["summary"], model_home=home,
                                         fingerprint=fp)
    assert blessed is True and "mAP" in art["metrics"].metadata and "confusionMatrix" in art["confusion"].metadata
    assert "**Blessed**" in open(art["summary"].path, encoding="utf-8").read()
    assert open(art["html"].path, encoding="utf-8").read().lstrip().lower().startswith("<!doctype html")
    out = comps.publish.python_func(exported=art["exported"], model=art["model"], evaluation=art["evaluation"],
                                    plan=art["plan"], data_stats=art["data_stats"], published=art["published"],
                                    model_home=home, run="run-1")
    assert out.version == "0001" and art["published"].metadata["version"] == "0001"
    assert Champion.of_home(home).data_stats == os.path.join(home, "versions", "0001", "data_stats.json")
    version = json.loads(open(os.path.join(home, "versions", "0001", "version.json"), encoding="utf-8").read())
    assert version["fingerprint"] == fp and version["settings_fingerprint"] and version["training"]["step"] == 2
    assert not os.path.exists("/minio") or not glob.glob("/minio/mlpipeline/v2/artifacts/odpipe-training/run-1/*")


def test_data_stage_components_on_real_artifacts(comps, tiny_data, tmp_path):
    labels = artifact(Dataset, tmp_path / "csv" / "labels")
    report = artifact(Dataset, tmp_path / "csv" / "report")
    stats = artifact(Metrics, tmp_path / "csv" / "stats")
    for a in (labels, report, stats):
        os.makedirs(os.path.dirname(a.path), exist_ok=True)
    comps.annotations_to_csv.python_func(
        annotations=str(tiny_data / "annotations"), images=str(tiny_data / "images"),
        labels=labels, report=report, stats=stats,
    )
    with open(labels.path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert labels.metadata["images"] == 10 == len({r["filename"] for r in rows})
    assert labels.metadata["objects"] == sum(1 for r in rows if r["class"])
    assert set(labels.metadata["classes"]) <= {"circle", "square", "triangle"}
    assert stats.metadata["images"] == 10 and "dropped" in stats.metadata
    assert json.loads(open(report.path, encoding="utf-8").read())["images"] == 10

    splits = artifact(Dataset, tmp_path / "split" / "splits")
    comps.split.python_func(labels=labels, splits=splits, images=str(tiny_data / "images"), eval_fraction=0.3, seed=1)
    assert sorted(os.listdir(splits.path)) == ["eval.csv", "train.csv"]
    assert splits.metadata["seed"] == 1 and splits.metadata["train"] and splits.metadata["eval"]

    # ids stay stable when an existing label map is extended
    old = tmp_path / "old.pbtxt"
    old.write_text('item {\n  id: 7\n  name: "square"\n}\n', encoding="utf-8")
    label_map = artifact(Dataset, tmp_path / "lm" / "label_map")
    os.makedirs(os.path.dirname(label_map.path))
    none = artifact(Artifact, tmp_path / "champion.json")
    Champion.none().save(none.path)
    comps.label_map.python_func(labels=labels, champion=none, label_map=label_map, existing_label_map=str(old))
    classes = label_map.metadata["classes"]
    assert classes["7"] == "square"
    assert label_map.metadata["class_count"] == len(classes) == len(set(classes.values()))
    assert label_map.metadata["num_classes"] == max(map(int, classes)) + 1  # one meaning: max id + 1

    records = artifact(Dataset, tmp_path / "rec" / "records")
    comps.records.python_func(splits=splits, label_map=label_map, images=str(tiny_data / "images"),
                              records=records, side="eval", shards=2)
    shards = sorted(f for f in os.listdir(records.path) if f.endswith(".tfrecord"))
    assert shards == ["records-00000-of-00002.tfrecord", "records-00001-of-00002.tfrecord"]
    assert records.metadata["side"] == "eval" and records.metadata["rejected"] == 0
    with open(os.path.join(splits.path, "eval.csv"), newline="", encoding="utf-8") as f:
        assert records.metadata["images"] == len({r["filename"] for r in csv.DictReader(f)})


def test_records_component_adds_the_dataflow_image(comps, monkeypatch, tmp_path):
    seen = {}

    def fake_convert(csv_path, images_dir, label_map_path, output_prefix, shards=None, runner="", beam_args=None):
        seen.update(csv=csv_path, prefix=output_prefix, runner=runner, beam_args=beam_args)
        return {"images": 0, "objects": 0, "rejected": []}

    import odpipe.records

    monkeypatch.setattr(odpipe.records, "convert", fake_convert)
    splits = artifact(Dataset, "gs://bucket/run/split/splits")
    label_map = artifact(Dataset, "gs://bucket/run/lm/label_map")
    records = artifact(Dataset, "gs://bucket/run/rec/records")
    comps.records.python_func(splits=splits, label_map=label_map, images="gs://bucket/images", records=records,
                              side="train", runner="DataflowRunner", beam_args=["--region=europe-west4"],
                              dataflow_image="registry.example/odpipe:test")
    assert seen["csv"] == "gs://bucket/run/split/splits/train.csv"  # .uri for gs:// capable code
    assert seen["prefix"] == "gs://bucket/run/rec/records/records"
    assert seen["beam_args"] == ["--region=europe-west4", "--sdk_container_image=registry.example/odpipe:test"]
    assert records.metadata["pattern"] == "gs://bucket/run/rec/records/records-*.tfrecord"


def test_publish_to_the_model_home_and_without_one(comps, tmp_path):
    src = tmp_path / "exported"
    (src / "saved_model" / "variables").mkdir(parents=True)
    (src / "saved_model" / "saved_model.pb").write_bytes(b"\x08\x01" * 1000)
    (src / "saved_model" / "variables" / "variables.index").write_bytes(b"idx")
    (src / "label_map.pbtxt").write_text('item {\n  id: 1\n  name: "a"\n}\n', encoding="utf-8")
    (src / "export.json").write_text(json.dumps({"checkpoint": "ckpt-5"}), encoding="utf-8")
    plan = artifact(Artifact, tmp_path / "plan.json")
    plan_doc = {"fingerprint": "fp1", "data_fingerprint": "d1", "settings_fingerprint": "s1"}
    (tmp_path / "plan.json").write_text(json.dumps(plan_doc), encoding="utf-8")
    best = tmp_path / "model" / "best"
    best.mkdir(parents=True)
    for name in ("ckpt-5.index", "ckpt-5.data-00000-of-00001"):
        (best / name).write_bytes(name.encode())
    exported = artifact(Model, src, tflite=False, checkpoint=str(best / "ckpt-5"), step=5)
    model = artifact(Model, tmp_path / "model", preset="retinanet-mobilenetv2", step=5)
    evaluation = artifact(Dataset, tmp_path / "evaluation")
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / "metrics.json").write_text(json.dumps({"mAP": 0.42, "mAP@0.5": 0.8, "champion": None}))

    # no model home: the export is copied to the run's own output
    published = artifact(Model, tmp_path / "pub" / "published")
    no_stats = artifact(Dataset, tmp_path / "no-data-report")
    out = comps.publish.python_func(exported=exported, model=model, evaluation=evaluation, plan=plan,
                                    data_stats=no_stats, published=published)
    assert out.version == "" and out.saved_model == os.path.join(published.path, "saved_model")
    assert open(os.path.join(published.path, "saved_model", "saved_model.pb"), "rb").read() == b"\x08\x01" * 1000
    assert published.metadata["files"] == 4

    # a model home: a new version with its checkpoint, provenance and current.json
    home = tmp_path / "home"
    published = artifact(Model, tmp_path / "pub2" / "published")
    out = comps.publish.python_func(exported=exported, model=model, evaluation=evaluation, plan=plan,
                                    data_stats=no_stats, published=published, model_home=str(home), run="run-7")
    assert out.version == "0001" and out.saved_model == str(home / "versions" / "0001" / "export" / "saved_model")
    version = json.loads((home / "versions" / "0001" / "version.json").read_text())
    assert version["fingerprint"] == "fp1" and version["data_fingerprint"] == "d1" and version["run"] == "run-7"
    assert version["training"]["preset"] == "retinanet-mobilenetv2" and version["mAP"] == 0.42
    assert sorted(os.listdir(home / "versions" / "0001" / "checkpoint")) == ["ckpt-5.data-00000-of-00001", "ckpt-5.index"]
    assert json.loads((home / "current.json").read_text())["version"] == "0001"
    assert json.loads(open(published.path).read())["version"] == published.metadata["version"] == "0001"

    empty = artifact(Model, tmp_path / "nothing")
    with pytest.raises(UserError, match="export folder is empty or missing"):
        comps.publish.python_func(exported=empty, model=model, evaluation=evaluation, plan=plan, data_stats=no_stats,
                                  published=artifact(Model, tmp_path / "p3"), model_home=str(home))


def test_components_speak_buckets(comps, tiny_data, gcs_bucket, tmp_path):
    """Vertex hands components gs:// URIs: the annotation stage reads a bucket (the tests' GCS
    emulator) and publish copies a bucket export tree through `.uri`. (The records stage's gs://
    output is covered by tests/test_records.py; its URI plumbing by the Dataflow test above.)"""
    from fixture_gcs import upload_dir

    from odpipe import storage

    data = f"{gcs_bucket}/components/data"
    upload_dir(str(tiny_data), data)
    labels = artifact(Dataset, tmp_path / "labels.csv")
    comps.annotations_to_csv.python_func(
        annotations=f"{data}/annotations", images=f"{data}/images", labels=labels,
        report=artifact(Dataset, tmp_path / "report.json"), stats=artifact(Metrics, tmp_path / "stats"),
    )
    assert labels.metadata["images"] == 10
    assert labels.metadata["source"] == {"annotations": f"{data}/annotations", "images": f"{data}/images"}
    splits = artifact(Dataset, tmp_path / "splits")
    comps.split.python_func(labels=labels, splits=splits, images=f"{data}/images", eval_fraction=0.3, seed=1)
    assert splits.metadata["duplicates_by"]

    exported = artifact(Model, f"{gcs_bucket}/components/run/export/exported")
    upload_dir(str(tiny_data / "annotations"), exported.uri + "/saved_model/assets")
    published = artifact(Model, f"{gcs_bucket}/components/run/publish/published")
    evaluation = artifact(Dataset, tmp_path / "evaluation")
    comps.publish.python_func(exported=exported, model=artifact(Model, tmp_path / "m"), evaluation=evaluation,
                              plan=artifact(Artifact, tmp_path / "no-plan.json"),
                              data_stats=artifact(Dataset, tmp_path / "no-stats"), published=published)
    source = storage.glob(f"{exported.uri}/**")
    copied = storage.glob(f"{published.uri}/**")
    assert len(copied) == len(source) == 10 == published.metadata["files"]
    assert [p[len(published.uri):] for p in copied] == [p[len(exported.uri):] for p in source]
    assert storage.read_bytes(copied[-1]) == storage.read_bytes(source[-1])
