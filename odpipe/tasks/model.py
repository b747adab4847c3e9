"""The model tasks: train (the warm-start rule), export, evaluate (champion vs challenger, the blessing)."""

from __future__ import annotations

import os

from odpipe import storage
from odpipe.champion import Champion
from odpipe.errors import UserError
from odpipe.model_home import record_attempt, warm_start_modules
from odpipe.tasks import Result, scalars
from odpipe.tasks.data import records_pattern

# Imported inside functions: the stage modules (TensorFlow, Model Garden: seconds) inside the task that runs them.

USER_ERROR_FILE = "user_error.txt"  # a retried trainer fails at once on the error of its first attempt
METRIC_NAMES = {"mAP": "mAP", "mAP@0.5": "mAP_50", "mAP@0.75": "mAP_75", "recall": "AR_100"}


def start_of(init_checkpoint: str, warm_start: bool, champion: Champion, label_map_path: str) -> tuple[str, dict]:
    """The run's start: warm start wins (the model in service's checkpoint) whenever there is one;
    otherwise `init_checkpoint` ("default", "none" or a path). Returns (init_checkpoint, train options)."""
    if not warm_start:
        return init_checkpoint or "none", {}
    if not (champion and champion.checkpoint):
        print(f"warm start: no model in service yet; starting from --init-checkpoint {init_checkpoint}")
        return init_checkpoint or "none", {}
    modules = warm_start_modules(champion.checkpoint, label_map_path)
    print(f"warm start from the model in service: {champion.checkpoint} ({modules}; "
          f"instead of --init-checkpoint {init_checkpoint})")
    return champion.checkpoint, {"init_checkpoint_modules": modules}


TENSORBOARD_ENV = "AIP_TENSORBOARD_LOG_DIR"  # set by Vertex AI in a CustomJob that has a TensorBoard


def share_tensorboard_logs(model_dir: str, log_dir: str) -> int:
    """Copies the run's TensorBoard event files (MODEL_DIR/train, MODEL_DIR/validation) to `log_dir`,
    the folder Vertex AI uploads to the job's Vertex TensorBoard; returns how many."""
    if not log_dir:
        return 0
    files = [f for f in storage.list_files(model_dir) if ".tfevents." in f and f.split("/")[0] in ("train", "validation")]
    copied = storage.copy_tree(model_dir, log_dir, files)
    print(f"TensorBoard: {copied} event file(s) -> {log_dir} (Vertex AI TensorBoard uploads them)")
    return copied


def train_task(train_records: str, eval_records: str, label_map_path: str, model_dir: str,
               champion: Champion | str | None = None, model_preset: str = "retinanet-mobilenetv2", steps: int = 0,
               batch_size: int = 0, image_size: int = 0, init_checkpoint: str = "default",
               config_overrides: str = "", warm_start: bool = False, time_budget: float = 0.0,
               mosaic: float = -1.0) -> Result:
    """Trains on Model Garden into `model_dir`; a user error is kept there so a retry fails at once."""
    from odpipe.train import train

    marker = storage.join(str(model_dir).rstrip("/"), USER_ERROR_FILE)
    if storage.exists(marker):
        raise UserError(storage.read_text(marker).strip() + " (as in the first attempt; a retry cannot fix it)")
    init, options = start_of(init_checkpoint, warm_start, Champion.read(champion), label_map_path)
    try:
        result = train(records_pattern(train_records), records_pattern(eval_records), label_map_path, model_dir,
                       model=model_preset, image_size=image_size or None, batch_size=batch_size or None,
                       steps=steps or None, init_checkpoint=init, config_overrides=config_overrides or None,
                       time_budget=time_budget or None,
                       mosaic=mosaic if mosaic >= 0 else None, **options)
    except UserError as err:
        storage.write_text(marker, str(err) + "\n")
        raise
    share_tensorboard_logs(model_dir, os.environ.get(TENSORBOARD_ENV, ""))
    metrics = {"step": result.get("step"), "loss": result.get("loss"), **(result.get("metrics") or {})}
    metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    model = {**{k: v for k, v in result.items() if k != "model_dir"}, "preset": model_preset, "framework": "tensorflow"}
    return Result({"model": model, "train_metrics": metrics})


def export_task(model_dir: str, calibration_records: str, export_dir: str, checkpoint: str = "best",
                tflite: str = "int8") -> Result:
    """SavedModel (+ model.tflite) of a checkpoint, with the label map and config beside it."""
    from odpipe.export import export_model

    kind = None if tflite in ("", "none") else tflite
    result = export_model(model_dir, export_dir, checkpoint=checkpoint, tflite=kind,
                          calibration_records=records_pattern(calibration_records))
    # "checkpoint" is the prefix exported (export_model's summary); the choice made is "checkpoint_choice"
    return Result({"exported": {**scalars(result), "checkpoint_choice": checkpoint, "tflite": tflite,
                                "framework": "tensorflow"}})


def evaluate_task(export_dir: str, eval_records: str, evaluation_dir: str, report_path: str,
                  champion: Champion | str | None = None, min_map: float = 0.0, margin: float = 0.0, model_home: str = "",
                  fingerprint: str = "", summary_path: str = "", data: dict | None = None) -> Result:
    """Scores the challenger and the champion on the same records; a loser is remembered in the home.
    For the pipeline UIs: the confusion matrix as ClassificationMetrics metadata ("confusion") and a
    Markdown run summary at `summary_path` (`data`: the eval records' metadata)."""
    from odpipe import run_summary
    from odpipe.evaluate import evaluate

    champion = Champion.read(champion)
    storage.makedirs(evaluation_dir)
    result = evaluate(export_dir, records_pattern(eval_records), evaluation_dir, min_map=min_map or None,
                      champion=champion.export or None, champion_version=champion.version, margin=margin,
                      provenance={"fingerprint": fingerprint})
    storage.write_bytes(report_path, storage.read_bytes(result["files"]["report"]))
    blessed = bool(result["blessed"])
    metrics = {name: float(result[key]) for key, name in METRIC_NAMES.items() if isinstance(result.get(key), (int, float))}
    rival = result.get("champion") or {}
    if isinstance(rival.get("mAP"), (int, float)):
        metrics["champion_mAP"] = float(rival["mAP"])
    metrics["blessed"] = 1.0 if blessed else 0.0
    print("blessing: " + "; ".join(result["blessing"]["reasons"]))
    if model_home and fingerprint and not blessed:
        record_attempt(model_home, fingerprint, {"mAP": result["mAP"], "champion_version": champion.version,
                                                 "reasons": result["blessing"]["reasons"]})
    evaluation = {**scalars(result), "champion_version": champion.version or ""}
    if summary_path:
        storage.write_text(summary_path, run_summary.markdown(result, data, model_home, fingerprint))
    return Result({"metrics": metrics, "evaluation": evaluation, "report": {"blessed": blessed},
                   "confusion": run_summary.confusion_metadata(result), "summary": {"blessed": blessed}}, blessed)

