"""KFP v2 components: a typed signature over one call of an `odpipe.tasks` function each.

Every decision lives in the task function (tested on its own in tests/test_tasks.py); a body here
only maps artifacts onto it: `at(artifact)` is where the task reads or writes (the gs:// URI on
Vertex AI, the local path the launcher syncs on Kubeflow's minio:// or s3:// store), and
`record(result, **artifacts)` copies the task's metadata onto the output artifacts.

They are *lightweight* Python components whose base image is the project's own image (which has
`odpipe` installed), so the same component runs on Vertex AI / Kubeflow, in Docker under
`kfp.local.DockerRunner`, and in this environment under `kfp.local.SubprocessRunner`. KFP
serialises each body on its own, so its imports live inside it. Images are chosen when the
pipeline is built (`build(image, trainer_image)`); nothing here reads the environment.
"""

from typing import List, NamedTuple, Optional

from google_cloud_pipeline_components.types.artifact_types import VertexModel
from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output, OutputPath

import odpipe

IMAGE_NAME = "odpipe"
TRAINER_IMAGE_NAME = "odpipe-gpu"
DEFAULT_IMAGE = f"{IMAGE_NAME}:{odpipe.__version__}"
DEFAULT_TRAINER_IMAGE = f"{TRAINER_IMAGE_NAME}:{odpipe.__version__}"


def fingerprint(
    annotations: str,
    images: str,
    champion: Output[Artifact],
    plan: Output[Artifact],
    fingerprint: OutputPath(str),
    model_home: str = "",
    force: bool = False,
    model: str = "retinanet-mobilenetv2",
    steps: int = 0,
    batch_size: int = 0,
    image_size: int = 0,
    init_checkpoint: str = "default",
    config_overrides: str = "",
    warm_start: bool = False,
    time_budget: float = 0.0,
    existing_label_map: str = "",
    eval_fraction: float = 0.2,
    seed: int = 0,
    strict: bool = False,
    tflite: str = "int8",
    min_map: float = 0.0,
    margin: float = 0.0,
    data_checks: str = "warn",
) -> bool:
    """Checks the run's settings, fingerprints data + settings + the model in service; never cached.

    Args:
        annotations: Folder of labelImg XML files (local path or gs:// URI).
        images: Folder of the images.
        champion: The model in service (champion.json: version, export, checkpoint, label map, metrics; or none).
        plan: plan.json: the fingerprints, the verdict and its one-line message.
        fingerprint: Hash of the data, the settings that shape the model and the model in service.
        model_home: The model home (versions/ and current.json); empty for none.
        force: Train even when nothing changed.
        model: Model preset or Model Garden experiment (checked, fingerprinted).
        steps: Training steps (checked, fingerprinted).
        batch_size: Global batch size (checked, fingerprinted).
        image_size: Input size (checked, fingerprinted).
        init_checkpoint: "default", "none" or a checkpoint (checked for reachability, fingerprinted).
        config_overrides: Model Garden overrides, a YAML file or YAML text (checked by applying them).
        warm_start: Fine-tune from the model in service (fingerprinted).
        time_budget: Training minutes (checked, fingerprinted).
        existing_label_map: Label map whose ids to keep (checked readable, fingerprinted by content).
        eval_fraction: Eval share of the split (checked, fingerprinted).
        seed: Split seed (fingerprinted).
        strict: Strict annotation checks (fingerprinted).
        tflite: model.tflite kind (checked, fingerprinted).
        min_map: Blessing threshold (checked; not fingerprinted).
        margin: Margin over the champion (checked; not fingerprinted).
        data_checks: The data report's verdict, "warn" or "fail" (checked; not fingerprinted).

    Returns:
        Whether the run must train (False: nothing changed since the model in service or a lost attempt).
    """
    from odpipe.settings import Settings
    from odpipe.tasks import at, record
    from odpipe.tasks.data import fingerprint_task

    settings = Settings(model=model, steps=steps, batch_size=batch_size, image_size=image_size,
                        init_checkpoint=init_checkpoint, config_overrides=config_overrides, warm_start=warm_start,
                        time_budget=time_budget, existing_label_map=existing_label_map, eval_fraction=eval_fraction,
                        seed=seed, strict=strict, tflite=tflite, min_map=min_map, margin=margin, model_home=model_home,
                        data_checks=data_checks)
    result = fingerprint_task(annotations, images, at(champion), at(plan), fingerprint, model_home, force, settings)
    return record(result, champion=champion, plan=plan)


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
        fingerprint: The run's fingerprint (recorded; it keys the cache).
    """
    from odpipe.tasks import at, record
    from odpipe.tasks.data import csv_task

    result = csv_task(annotations, images, at(labels), at(report), strict, fingerprint)
    record(result, labels=labels, report=report, stats=stats)


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
    from odpipe.tasks import at, record
    from odpipe.tasks.data import split_task

    result = split_task(at(labels), at(splits), images, eval_fraction, seed, labels.metadata.get("fingerprint", ""))
    record(result, splits=splits)


def label_map(
    labels: Input[Dataset],
    champion: Input[Artifact],
    label_map: Output[Dataset],
    existing_label_map: str = "",
):
    """Writes the label map (label_map.pbtxt) for the classes of the labels CSV.

    Args:
        labels: The labels CSV from the annotations component.
        champion: The model in service; its ids are kept (new classes appended) unless existing_label_map is given.
        label_map: The label map in TF Object Detection API pbtxt format.
        existing_label_map: A label map (local path or gs:// URI) whose ids are kept; empty for the champion's.
    """
    from odpipe.tasks import at, record
    from odpipe.tasks.data import label_map_task

    record(label_map_task(at(labels), at(label_map), existing_label_map, at(champion)), label_map=label_map)


def data_report(
    labels: Input[Dataset],
    splits: Input[Dataset],
    champion: Input[Artifact],
    report: Output[HTML],
    data_stats: Output[Dataset],
    data_metrics: Output[Metrics],
    images: str = "",
    model_preset: str = "retinanet-mobilenetv2",
    image_size: int = 0,
    data_checks: str = "warn",
):
    """Looks at the data before training: counts, box sizes at the input size, duplicates, checks, drift.

    Args:
        labels: The labels CSV from the annotations component.
        splits: Folder with train.csv and eval.csv from the split component.
        champion: The model in service; the data it was trained on is compared with this data (drift).
        report: data_report.html (self-contained: plots and sample images with their boxes).
        data_stats: Folder with data_stats.json (statistics, anomalies, drift) and the plots.
        data_metrics: Headline figures: images, objects, classes, errors, warnings, unmatchable share.
        images: Images folder (image facts, duplicates, the gallery); empty to skip them.
        model_preset: The model preset whose input size and anchors the box sizes are judged against.
        image_size: Input size in pixels; 0 for the preset's.
        data_checks: "warn" (report errors, go on) or "fail" (an error in the data stops the run before training).
    """
    from odpipe.tasks import at, record
    from odpipe.tasks.data import data_report_task

    result = data_report_task(at(labels), at(splits), images, at(report), at(data_stats), at(champion), model_preset,
                              image_size, data_checks)
    record(result, report=report, data_stats=data_stats, data_metrics=data_metrics)


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
    from odpipe.tasks import at, record
    from odpipe.tasks.data import records_task

    result = records_task(at(splits), at(label_map), images, at(records), side, shards, runner, beam_args,
                          dataflow_image, splits.metadata.get("fingerprint", ""))
    record(result, records=records)


def train(
    train_records: Input[Dataset],
    eval_records: Input[Dataset],
    label_map: Input[Dataset],
    champion: Input[Artifact],
    model: Output[Model],
    train_metrics: Output[Metrics],
    model_preset: str = "retinanet-mobilenetv2",
    steps: int = 0,
    batch_size: int = 0,
    image_size: int = 0,
    init_checkpoint: str = "default",
    config_overrides: str = "",
    warm_start: bool = False,
    time_budget: float = 0.0,
):
    """Trains a detector on TF Model Garden; keeps checkpoints, the best one and the config.

    Args:
        train_records: Training TFRecords from the records component.
        eval_records: Evaluation TFRecords, used for periodic evaluation and the best checkpoint.
        label_map: The label map; num_classes follows from its largest id.
        champion: The model in service (its checkpoint is the warm start).
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
        warm_start: Start from the model in service's checkpoint whenever there is one (it wins over
            init_checkpoint), so retraining fine-tunes instead of starting over.
        time_budget: Training minutes (the steps are sized to end inside them); 0 for none.
    """
    from odpipe.tasks import at, record
    from odpipe.tasks.model import train_task

    result = train_task(at(train_records), at(eval_records), at(label_map), at(model), at(champion), model_preset,
                        steps, batch_size, image_size, init_checkpoint, config_overrides, warm_start, time_budget)
    record(result, model=model, train_metrics=train_metrics)


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
    from odpipe.tasks import at, record
    from odpipe.tasks.model import export_task

    record(export_task(at(model), at(calibration_records), at(exported), checkpoint, tflite), exported=exported)


def evaluate(
    exported: Input[Model],
    eval_records: Input[Dataset],
    champion: Input[Artifact],
    metrics: Output[Metrics],
    evaluation: Output[Dataset],
    report: Output[HTML],
    confusion: Output[ClassificationMetrics],
    summary: Output[Markdown],
    min_map: float = 0.0,
    margin: float = 0.0,
    model_home: str = "",
    fingerprint: str = "",
) -> bool:
    """Scores the new export and the model in service on the same eval records; decides the blessing.

    Args:
        exported: The export directory from the export component (the challenger).
        eval_records: Evaluation TFRecords from the records component.
        champion: The model in service (scored on the same records); none on a first run.
        metrics: mAP, mAP@0.5, mAP@0.75 and AR@100 as metrics (and the champion's mAP).
        evaluation: Folder with metrics.json, the confusion matrix and PR curves.
        report: The self-contained HTML report (challenger and champion side by side).
        confusion: The confusion matrix (ground truth x predicted, background last), drawn by the pipeline UIs.
        summary: The run in a few lines (Markdown): verdict, data, challenger vs champion, per class.
        min_map: Bless only if mAP (0.5:0.95) is at least this; 0 for no threshold.
        margin: The challenger's mAP must be at least the champion's plus this.
        model_home: The model home; a challenger that is not blessed is noted there, so an
            unchanged rerun is skipped.
        fingerprint: The run's fingerprint (recorded in metrics.json).

    Returns:
        Whether the model is blessed (mAP >= min_map and >= the champion's + margin).
    """
    from odpipe.tasks import at, record
    from odpipe.tasks.model import evaluate_task

    result = evaluate_task(at(exported), at(eval_records), at(evaluation), at(report), at(champion), min_map, margin,
                           model_home, fingerprint, at(summary), dict(eval_records.metadata))
    return record(result, metrics=metrics, evaluation=evaluation, report=report, confusion=confusion, summary=summary)


def publish(
    exported: Input[Model],
    model: Input[Model],
    evaluation: Input[Dataset],
    plan: Input[Artifact],
    data_stats: Input[Dataset],
    published: Output[Model],
    model_home: str = "",
    run: str = "",
) -> NamedTuple("Published", [("version", str), ("saved_model", str)]):
    """Publishes a blessed export as a new version of the model home and makes it current.

    Args:
        exported: The export directory that passed evaluation.
        model: The model directory it was exported from (its training summary is recorded).
        evaluation: The evaluation folder (its metrics.json goes with the version).
        plan: The fingerprint task's plan (its fingerprints are recorded in the version).
        data_stats: The data report's folder; its data_stats.json is kept with the version (drift next time).
        published: What was published: the version's record (or, with no model home, the export).
        model_home: The model home (local or gs://); empty to publish to this run's output only.
        run: The pipeline run that made it.

    Returns:
        version: The new version ("" without a model home).
        saved_model: URI of the published SavedModel folder.
    """
    from odpipe.tasks import at, record
    from odpipe.tasks.publish import publish_task

    result = publish_task(at(exported), at(evaluation), at(published), model_home, at(plan), dict(model.metadata),
                          dict(exported.metadata), run, at(data_stats))
    return record(result, published=published)


def register(
    saved_model: str,
    version: str,
    evaluation: Input[Dataset],
    registry_model: str,
    project: str,
    location: str,
    model: Output[VertexModel],
    fingerprint: str = "",
    serving_image: str = "",
    model_home: str = "",
) -> str:
    """Uploads the published model as a new version of a Vertex AI Model Registry model.

    Args:
        saved_model: gs:// URI of the published SavedModel folder.
        version: Its model-home version (becomes the alias odpipe-vNNNN).
        evaluation: The evaluation folder (mAP for the labels).
        registry_model: Registry model id or resource name; created on the first upload.
        project: Google Cloud project of the registry.
        location: Vertex AI region of the registry.
        model: The registry model (google.VertexModel: resourceName), for GCPC's deploy and batch-prediction components.
        fingerprint: The run's fingerprint (a label).
        serving_image: Serving container: the project's image (runs `odpipe serve`) or a Vertex AI prebuilt
            TensorFlow image; empty for the prebuilt TensorFlow 2.15 CPU image.
        model_home: The model home; the registry entry is noted beside the version (registry.json), so a promote moves the default alias.

    Returns:
        The registry model version's resource name (MODEL@VERSION_ID).
    """
    from odpipe.tasks import at, record
    from odpipe.tasks.publish import register_task

    result = register_task(saved_model, version, at(evaluation), registry_model, project, location, fingerprint,
                           serving_image, model_home)
    return record(result, model=model)


STAGES = (fingerprint, annotations_to_csv, split, label_map, data_report, records, train, export, evaluate, publish, register)
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


# --- The prelabel pipeline's component (pipelines/prelabel.py): built on its own, not one of STAGES.


def prelabel(
    images: str,
    prelabels: Output[Dataset],
    export: str = "",
    model_home: str = "",
    threshold: float = 0.5,
    runner: str = "DirectRunner",
    beam_args: List[str] = [],  # noqa: B006 (a KFP default, never mutated)
    batch_size: int = 8,
    draw: bool = False,
    dataflow_image: str = "",
) -> int:
    """Pre-labels a folder of new images: labelImg XML per image for a person to correct.

    Args:
        images: Folder of new images (gs:// URI or local path; searched recursively).
        prelabels: Folder with annotations/<name>.xml (labelImg), predictions.json (and images/ with draw).
        export: Export folder of the model to use; empty for the model in service of model_home.
        model_home: The model home whose model in service pre-labels (when export is empty).
        threshold: Minimum score for a box to be written.
        runner: Beam runner: "DirectRunner" (in the task) or "DataflowRunner" (RunInference on Dataflow).
        beam_args: Extra Beam options, e.g. ["--project=P", "--region=R", "--temp_location=gs://B/tmp"].
        batch_size: Images per model call.
        draw: Also write each image drawn with its boxes.
        dataflow_image: SDK container image for Dataflow workers; added as --sdk_container_image.

    Returns:
        The number of images pre-labelled.
    """
    from odpipe.tasks import at, record
    from odpipe.tasks.predict import prelabel_task

    result = prelabel_task(images, at(prelabels), export, model_home, threshold, runner, beam_args, batch_size, draw,
                           dataflow_image)
    return record(result, prelabels=prelabels)


def build_prelabel(image: Optional[str] = None):
    """The prelabel component on the CPU image (default `odpipe:VERSION`)."""
    return dsl.component(prelabel, base_image=image or DEFAULT_IMAGE, install_kfp_package=False)
