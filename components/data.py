"""The data components: fingerprint (and the run's checks), annotations -> CSV, split, label map, data report, records.

See components/stages.py for the rules every component here follows.
"""

from typing import List

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output, OutputPath


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
    mosaic: float = -1.0,
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
        mosaic: Share of training images made mosaics; -1 for the preset's (checked, fingerprinted when set).
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
                        time_budget=time_budget, mosaic=mosaic, existing_label_map=existing_label_map, eval_fraction=eval_fraction,
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
