"""KFP v2 components: one thin, typed wrapper per odpipe stage.

Each function below maps KFP artifacts and parameters onto exactly one call of a tested
`odpipe` function and records provenance (counts, classes, config) in artifact metadata.
They are *lightweight* Python components whose base image is the project's own image (which
has `odpipe` installed), so the same component runs on Vertex AI / Kubeflow and in the current
environment under `kfp.local.SubprocessRunner(use_venv=False)`.

Code that speaks `gs://` (Beam, TensorFlow, odpipe.storage) gets an artifact's `.uri`; code
that does plain local file I/O gets its `.path` (a `/gcs/...` FUSE path on Vertex).

Images are chosen when the pipeline is built: `build(image, trainer_image)` wraps the functions
with those base images. Nothing here reads the environment.

The bodies are serialised by KFP on their own, so every import lives inside the body.
"""

from typing import List, NamedTuple, Optional

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output, OutputPath

import odpipe

IMAGE_NAME = "odpipe"
TRAINER_IMAGE_NAME = "odpipe-gpu"
DEFAULT_IMAGE = f"{IMAGE_NAME}:{odpipe.__version__}"
DEFAULT_TRAINER_IMAGE = f"{TRAINER_IMAGE_NAME}:{odpipe.__version__}"


def fingerprint(
    annotations: str,
    images: str,
    fingerprint: OutputPath(str),
    data_fingerprint: OutputPath(str),
    message: OutputPath(str),
    champion: OutputPath(str),
    champion_version: OutputPath(str),
    champion_label_map: OutputPath(str),
    champion_checkpoint: OutputPath(str),
    model_home: str = "",
    force: bool = False,
) -> bool:
    """Fingerprints the data (folder listings, no file read) and the model in service; never cached.

    Args:
        annotations: Folder of labelImg XML files (local path or gs:// URI).
        images: Folder of the images.
        fingerprint: Hash of the listings and the current model version (every later task's input).
        data_fingerprint: Hash of the listings alone.
        message: One line saying what was found.
        champion: Export folder of the model in service ("" when none).
        champion_version: Its version ("" when none).
        champion_label_map: Its label map ("" when none).
        champion_checkpoint: Its checkpoint prefix ("" when none).
        model_home: The model home (versions/ and current.json); empty for none.
        force: Train even when the data and the model in service are unchanged.

    Returns:
        Whether the run must train (False: the data is unchanged since the last run).
    """
    import os

    from odpipe.fingerprint import plan

    result = plan(annotations, images, model_home, force=force)
    print(f"fingerprint: {result['message']}")
    for name, path in (("fingerprint", fingerprint), ("data_fingerprint", data_fingerprint), ("message", message),
                       ("champion", champion), ("champion_version", champion_version),
                       ("champion_label_map", champion_label_map), ("champion_checkpoint", champion_checkpoint)):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(str(result[name]))
    return bool(result["changed"])


def annotations_to_csv(
    annotations: str,
    images: str,
    labels: Output[Dataset],
    report: Output[Dataset],
    stats: Output[Metrics],
    strict: bool = False,
    fingerprint: str = "",
):
    """Converts a folder of labelImg (Pascal VOC XML) annotations to one labels CSV.

    Args:
        annotations: Folder of `.xml` files, searched recursively (local path or gs:// URI).
        images: Folder the `<filename>` of each XML is relative to (local path or gs:// URI).
        labels: The labels CSV (filename,width,height,class,xmin,ymin,xmax,ymax,...).
        report: The conversion report (report.json): counts, classes, dropped boxes, warnings.
        stats: Image, object and dropped counts as metrics.
        strict: Treat every warning or dropped box as an error.
        fingerprint: The data fingerprint of this run (recorded; it keys the cache).
    """
    import json

    from odpipe.annotations import xml_to_csv

    result = xml_to_csv(annotations, labels.path, images_dir=images, report_path=report.path, strict=strict)
    counts = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for name in ("dropped", "dropped_images", "warnings"):
        if isinstance(result.get(name), (list, dict)):
            counts[name] = len(result[name])
    for name, value in counts.items():
        stats.log_metric(name, value)
    labels.metadata.update(counts)
    labels.metadata["classes"] = json.loads(json.dumps(result.get("classes", {})))
    labels.metadata["source"] = {"annotations": annotations, "images": images}
    labels.metadata["fingerprint"] = fingerprint
    report.metadata.update(counts)


def split(
    labels: Input[Dataset],
    splits: Output[Dataset],
    images: str = "",
    eval_fraction: float = 0.2,
    seed: int = 0,
):
    """Splits the labels CSV by image into train.csv and eval.csv, stratified by class.

    Args:
        labels: The labels CSV from the annotations component.
        splits: Folder with train.csv and eval.csv.
        images: Images folder, used to keep byte-identical images on one side (optional).
        eval_fraction: Fraction of the images that goes to eval.csv, in (0, 1).
        seed: Random seed; the same seed gives the same split.
    """
    import json
    import os

    from odpipe.split import split_csv

    os.makedirs(splits.path, exist_ok=True)
    result = split_csv(labels.path, splits.path, eval_fraction=eval_fraction, seed=seed, images_dir=images or None)
    splits.metadata.update(json.loads(json.dumps(result, default=str)))
    splits.metadata.update({"eval_fraction": eval_fraction, "seed": seed,
                            "fingerprint": labels.metadata.get("fingerprint", "")})


def label_map(
    labels: Input[Dataset],
    label_map: Output[Dataset],
    existing_label_map: str = "",
    champion_label_map: str = "",
):
    """Writes the label map (label_map.pbtxt) for the classes of the labels CSV.

    Args:
        labels: The labels CSV from the annotations component.
        label_map: The label map in TF Object Detection API pbtxt format.
        existing_label_map: A previous label map (local path or gs:// URI) whose ids are kept, so that
            ids stay stable across retraining; new classes get new ids. Empty for a fresh map.
        champion_label_map: The label map of the model in service, used when no existing_label_map is
            given, so old classes keep their ids and new classes are appended.
    """
    from odpipe.label_map import num_classes, write_label_map

    extend = existing_label_map or champion_label_map or None
    classes = write_label_map(labels.path, label_map.path, extend=extend)
    label_map.metadata["classes"] = {str(k): v for k, v in sorted(classes.items())}
    label_map.metadata["num_classes"] = num_classes(classes)
    label_map.metadata["class_count"] = len(classes)
    label_map.metadata["extended_from"] = extend or ""


def records(
    splits: Input[Dataset],
    label_map: Input[Dataset],
    images: str,
    records: Output[Dataset],
    side: str = "train",
    shards: int = 0,
    runner: str = "DirectRunner",
    beam_args: List[str] = [],  # noqa: B006 (a KFP default, never mutated)
    dataflow_image: str = "",
):
    """Converts one side of the split (train or eval) to sharded TFRecords with Apache Beam.

    Args:
        splits: Folder with train.csv and eval.csv from the split component.
        label_map: The label map; class names become these ids.
        images: Images folder the CSV file names are relative to (local path or gs:// URI).
        records: Folder of `records-NNNNN-of-NNNNN.tfrecord` shards and `records.summary.json`.
        side: Which CSV to convert: "train" or "eval".
        shards: Number of output shards; 0 picks one from the data size.
        runner: Beam runner, e.g. "DirectRunner" or "DataflowRunner".
        beam_args: Extra Beam pipeline options, e.g. ["--project=P", "--region=R",
            "--temp_location=gs://B/tmp"] for Dataflow.
        dataflow_image: SDK container image for Dataflow workers; added as
            --sdk_container_image when the runner is Dataflow and none is given.
    """
    from odpipe import storage
    from odpipe.records import convert

    args = list(beam_args or [])
    if runner == "DataflowRunner" and dataflow_image and not any("sdk_container_image" in a for a in args):
        args.append(f"--sdk_container_image={dataflow_image}")
    storage.makedirs(records.uri)  # a local folder is created; a bucket needs none
    prefix = records.uri.rstrip("/") + "/records"
    summary = convert(
        splits.uri.rstrip("/") + f"/{side}.csv",
        images,
        label_map.uri,
        prefix,
        shards=shards or None,
        runner=runner,
        beam_args=args,
    )
    rejected = summary.get("rejected", [])
    records.metadata.update({k: v for k, v in summary.items() if k != "rejected"})
    records.metadata.update({"side": side, "pattern": prefix + "-*.tfrecord", "rejected": len(rejected), "runner": runner,
                             "fingerprint": splits.metadata.get("fingerprint", "")})


def train(
    train_records: Input[Dataset],
    eval_records: Input[Dataset],
    label_map: Input[Dataset],
    model: Output[Model],
    train_metrics: Output[Metrics],
    model_preset: str = "retinanet-mobilenetv2",
    steps: int = 0,
    batch_size: int = 0,
    image_size: int = 0,
    init_checkpoint: str = "default",
    config_overrides: str = "",
    warm_start: bool = False,
    champion_checkpoint: str = "",
    time_budget: float = 0.0,
):
    """Trains a detector on TF Model Garden; keeps checkpoints, the best one and the config.

    Args:
        train_records: Training TFRecords from the records component.
        eval_records: Evaluation TFRecords, used for periodic evaluation and the best checkpoint.
        label_map: The label map; num_classes follows from its largest id.
        model: The model directory (checkpoints, best/, config.yaml, TensorBoard summaries).
        train_metrics: Final step, loss and evaluation metrics.
        model_preset: "retinanet-mobilenetv2" (CPU), "retinanet-resnet50fpn" (GPU) or a Model Garden
            experiment name.
        steps: Training steps; 0 uses the preset's default.
        batch_size: Global batch size; 0 uses the preset's default.
        image_size: Square input size in pixels; 0 uses the preset's default.
        init_checkpoint: Start: "default" (the preset's published pretrained checkpoint), "none" (from
            scratch) or a checkpoint (folder, prefix or .index/.data file).
        config_overrides: Model Garden config overrides (a YAML file path or YAML text), applied strictly.
        warm_start: Start from the checkpoint of the model in service (when there is one) instead of
            the preset's default start, so retraining fine-tunes instead of starting over.
        champion_checkpoint: Checkpoint prefix of the model in service ("" when none).
        time_budget: Training minutes (the steps are sized to end inside them); 0 for none.
    """
    import json

    from odpipe.model_home import warm_start_modules
    from odpipe.train import train as train_model

    options = {}
    if warm_start and champion_checkpoint and init_checkpoint == "default":
        init_checkpoint = champion_checkpoint  # its architecture comes from the config.yaml beside it
        options["init_checkpoint_modules"] = warm_start_modules(champion_checkpoint, label_map.uri)
        print(f"warm start from the model in service: {champion_checkpoint} ({options['init_checkpoint_modules']})")

    result = train_model(
        train_records.uri.rstrip("/") + "/records-*.tfrecord",
        eval_records.uri.rstrip("/") + "/records-*.tfrecord",
        label_map.uri,
        model.uri,
        model=model_preset,
        image_size=image_size or None,
        batch_size=batch_size or None,
        steps=steps or None,
        init_checkpoint=init_checkpoint or "none",
        config_overrides=config_overrides or None,
        time_budget=time_budget or None,
        **options,
    )
    result = json.loads(json.dumps(result, default=str))
    for name, value in {"step": result.get("step"), "loss": result.get("loss"), **(result.get("metrics") or {})}.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            train_metrics.log_metric(name, value)
    model.metadata.update({k: v for k, v in result.items() if k != "model_dir"})
    model.metadata["preset"] = model_preset
    model.metadata["framework"] = "tensorflow"


def export(
    model: Input[Model],
    calibration_records: Input[Dataset],
    exported: Output[Model],
    checkpoint: str = "best",
    tflite: str = "int8",
):
    """Exports a checkpoint to a SavedModel (+ TFLite) with the label map and config beside it.

    Args:
        model: The model directory from the train component.
        calibration_records: Training TFRecords; int8 quantization is calibrated on a sample of them.
        exported: The export directory: saved_model/, label_map.pbtxt, config.yaml, model.tflite.
        checkpoint: "best", "latest" or a checkpoint path.
        tflite: model.tflite type: "int8" (full-integer, calibrated), "fp16", "float", or "none".
    """
    import json

    from odpipe.export import export_model

    kind = None if tflite in ("", "none") else tflite
    result = export_model(model.uri, exported.uri, checkpoint=checkpoint, tflite=kind,
                          calibration_records=calibration_records.uri.rstrip("/") + "/records-*.tfrecord")
    exported.metadata.update(json.loads(json.dumps(result, default=str)))
    # "checkpoint" is the prefix exported (export_model's summary); the choice made is "checkpoint_choice"
    exported.metadata.update({"checkpoint_choice": checkpoint, "tflite": tflite, "framework": "tensorflow"})


def evaluate(
    exported: Input[Model],
    eval_records: Input[Dataset],
    metrics: Output[Metrics],
    evaluation: Output[Dataset],
    report: Output[HTML],
    min_map: float = 0.0,
    champion: str = "",
    champion_version: str = "",
    margin: float = 0.0,
    model_home: str = "",
    fingerprint: str = "",
) -> bool:
    """Scores the new export and the model in service on the same eval records; decides the blessing.

    Args:
        exported: The export directory from the export component (the challenger).
        eval_records: Evaluation TFRecords from the records component.
        metrics: mAP, mAP@0.5, mAP@0.75 and AR@100 as metrics (and the champion's mAP).
        evaluation: Folder with metrics.json, the confusion matrix and PR curves.
        report: The self-contained HTML report (challenger and champion side by side).
        min_map: Bless only if mAP (0.5:0.95) is at least this; 0 for no threshold.
        champion: Export folder of the model in service; empty for none (first run).
        champion_version: Its version in the model home.
        margin: The challenger's mAP must be at least the champion's plus this.
        model_home: The model home; a challenger that is not blessed is noted there, so an
            unchanged rerun is skipped.
        fingerprint: The run's data fingerprint (recorded in metrics.json).

    Returns:
        Whether the model is blessed (mAP >= min_map and >= the champion's + margin).
    """
    import json
    import os
    import shutil

    from odpipe import storage
    from odpipe.evaluate import evaluate as evaluate_model
    from odpipe.model_home import record_attempt

    os.makedirs(evaluation.path, exist_ok=True)
    result = evaluate_model(
        exported.uri,
        eval_records.uri.rstrip("/") + "/records-*.tfrecord",
        evaluation.path,
        min_map=min_map or None,
        champion=champion or None,
        champion_version=champion_version or None,
        margin=margin,
    )
    result["fingerprint"] = fingerprint
    storage.write_text(result["files"]["metrics"], json.dumps(result, indent=1) + "\n")
    shutil.copyfile(os.path.join(evaluation.path, "report.html"), report.path)
    for key, name in (("mAP", "mAP"), ("mAP@0.5", "mAP_50"), ("mAP@0.75", "mAP_75"), ("recall", "AR_100")):
        if isinstance(result.get(key), (int, float)):
            metrics.log_metric(name, float(result[key]))
    if result.get("champion") and isinstance(result["champion"].get("mAP"), (int, float)):
        metrics.log_metric("champion_mAP", float(result["champion"]["mAP"]))
    metrics.log_metric("blessed", 1.0 if result["blessed"] else 0.0)
    summary = {k: v for k, v in result.items() if not isinstance(v, (dict, list))}
    evaluation.metadata.update(json.loads(json.dumps(summary, default=str)))
    evaluation.metadata["champion_version"] = champion_version
    report.metadata["blessed"] = bool(result["blessed"])
    print("blessing: " + "; ".join(result["blessing"]["reasons"]))
    if model_home and fingerprint and not result["blessed"]:
        record_attempt(model_home, fingerprint, {"mAP": result["mAP"], "champion_version": champion_version,
                                                 "reasons": result["blessing"]["reasons"]})
    return bool(result["blessed"])


def publish(
    exported: Input[Model],
    model: Input[Model],
    evaluation: Input[Dataset],
    published: Output[Model],
    model_home: str = "",
    fingerprint: str = "",
    data_fingerprint: str = "",
    run: str = "",
) -> NamedTuple("Published", [("version", str), ("saved_model", str)]):
    """Publishes a blessed export as a new version of the model home and makes it current.

    Args:
        exported: The export directory that passed evaluation.
        model: The model directory it was exported from (its training summary is recorded).
        evaluation: The evaluation folder (its metrics.json goes with the version).
        published: What was published: the version's record (or, with no model home, the export).
        model_home: The model home (local or gs://); empty to publish to this run's output only.
        fingerprint: The run's fingerprint (recorded in the version).
        data_fingerprint: The fingerprint of the data alone (an unchanged rerun is skipped).
        run: The pipeline run that made it.

    Returns:
        version: The new version ("" without a model home).
        saved_model: URI of the published SavedModel folder.
    """
    import json
    import os
    from collections import namedtuple

    from odpipe import model_home as home
    from odpipe import storage

    Published = namedtuple("Published", ("version", "saved_model"))
    if not model_home:
        copied = storage.copy_tree(exported.uri, published.uri)
        published.metadata.update({"files": copied, "source": exported.uri})
        return Published("", storage.join(published.uri, "saved_model"))
    metrics = json.loads(storage.read_text(os.path.join(evaluation.path, "metrics.json")))
    provenance = {
        "fingerprint": fingerprint,
        "data_fingerprint": data_fingerprint,
        "run": run,
        "config": "export/config.yaml",
        "training": {k: v for k, v in dict(model.metadata).items() if not isinstance(v, (dict, list))},
        "export": {k: v for k, v in dict(exported.metadata).items() if not isinstance(v, (dict, list))},
        "champion": (metrics.get("champion") or {}).get("version"),
    }
    current = home.publish(model_home, exported.uri, metrics, provenance, checkpoint=exported.metadata.get("checkpoint"))
    record = {**current, "home": model_home}
    storage.makedirs(os.path.dirname(published.path))
    with open(published.path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    published.metadata.update(record)
    print(f"published version {current['version']} to {model_home} (current.json updated)")
    return Published(current["version"], storage.join(home.version_dir(model_home, current["version"]), "export", "saved_model"))


def register(
    saved_model: str,
    version: str,
    evaluation: Input[Dataset],
    registry_model: str,
    project: str,
    location: str,
    fingerprint: str = "",
    serving_image: str = "",
) -> str:
    """Uploads the published model as a new version of a Vertex AI Model Registry model.

    Args:
        saved_model: gs:// URI of the published SavedModel folder.
        version: Its model-home version (becomes the alias odpipe-vNNNN).
        evaluation: The evaluation folder (mAP for the labels).
        registry_model: Registry model id or resource name; created on the first upload.
        project: Google Cloud project of the registry.
        location: Vertex AI region of the registry.
        fingerprint: The run's fingerprint (a label).
        serving_image: Prebuilt serving container; empty for TensorFlow 2 CPU.

    Returns:
        The registry model version's resource name.
    """
    import json
    import os

    from odpipe import registry

    metrics = json.loads(open(os.path.join(evaluation.path, "metrics.json"), encoding="utf-8").read())
    result = registry.upload_version(registry_model, saved_model, project, location, version or "0", metrics,
                                     fingerprint, serving_image=serving_image or registry.SERVING_IMAGE)
    print(f"registered {result['model']}@{result['version_id']} (aliases {', '.join(result['aliases'])})")
    return f"{result['model']}@{result['version_id']}"


STAGES = (fingerprint, annotations_to_csv, split, label_map, records, train, export, evaluate, publish, register)
TRAINER_STAGES = ("train",)


class Components:
    """The stage components built with one pair of images (attributes named after the stages)."""

    def __init__(self, image: str, trainer_image: str):
        self.image = image
        self.trainer_image = trainer_image
        for func in STAGES:
            base = trainer_image if func.__name__ in TRAINER_STAGES else image
            setattr(self, func.__name__, dsl.component(func, base_image=base, install_kfp_package=False))

    def all(self) -> dict:
        return {func.__name__: getattr(self, func.__name__) for func in STAGES}


def build(image: Optional[str] = None, trainer_image: Optional[str] = None) -> Components:
    """The components with these base images (defaults: `odpipe:VERSION` and `odpipe-gpu:VERSION`).

    Args:
        image: CPU image for the data, evaluation, export and publish stages.
        trainer_image: GPU image for the trainer.
    """
    return Components(image or DEFAULT_IMAGE, trainer_image or DEFAULT_TRAINER_IMAGE)
