"""The model components: train, export, evaluate (champion vs challenger).

See components/stages.py for the rules every component here follows.
"""


from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output


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
    mosaic: float = -1.0,
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
        image_size: Square input size in pixels; 0 chooses it from the boxes and the model's anchors.
        init_checkpoint: Start: "default" (the preset's published pretrained checkpoint), "none" (from
            scratch) or a checkpoint (folder, prefix or .index/.data file).
        config_overrides: Model Garden config overrides (a YAML file path or YAML text), applied strictly.
        warm_start: Start from the model in service's checkpoint whenever there is one (it wins over
            init_checkpoint), so retraining fine-tunes instead of starting over.
        time_budget: Training minutes (the steps are sized to end inside them); 0 for none.
        mosaic: Share of training images made mosaics of four (0 off, 1 all); -1 for the preset's.
    """
    from odpipe.tasks import at, record
    from odpipe.tasks.model import train_task

    result = train_task(at(train_records), at(eval_records), at(label_map), at(model), at(champion), model_preset,
                        steps, batch_size, image_size, init_checkpoint, config_overrides, warm_start, time_budget,
                        mosaic)
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
