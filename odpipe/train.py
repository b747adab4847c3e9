"""Train a detector on TF Model Garden (`official.vision`) from odpipe's TFRecords.

    odpipe train --train 'rec/train-*.tfrecord' --eval 'rec/eval-*.tfrecord' \
        --label-map label_map.pbtxt --model-dir runs/m1 [--model retinanet-mobilenetv2] [--steps N]

The experiment config comes from a preset (or any registered Model Garden detection experiment),
is filled in from the label map and the records (num_classes = max id + 1, input paths, sizes,
a warmup + cosine schedule sized to --steps), then a user YAML override is applied strictly,
validated, locked and saved as MODEL_DIR/config.yaml. Training runs through Model Garden's task
and trainer on an Orbit controller: checkpoints every K steps (a re-run resumes from the latest),
TensorBoard summaries in MODEL_DIR/train and MODEL_DIR/validation, periodic COCO evaluation on the
eval records, the best checkpoint by eval mAP@0.5 kept in MODEL_DIR/best/ (+ best.json), and
optional early stopping.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import re
import sys
import time
from typing import Any

from odpipe import storage
from odpipe.errors import UserError, first_line
from odpipe.label_map import num_classes, read_label_map

log = logging.getLogger("odpipe.train")

BEST_SUBDIR = "best"
BEST_METRIC = "AP50"  # COCO mAP@0.5, as reported by Model Garden's COCO evaluator.


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named starting point: a Model Garden experiment plus odpipe's defaults for it."""

    experiment: str
    image_size: int
    batch_size: int
    steps: int
    learning_rate: float
    warmup_fraction: float
    aug_hflip: bool
    aug_scale_min: float
    aug_scale_max: float
    aug_type: str | None
    overrides: dict
    description: str


PRESETS: dict[str, Preset] = {
    # Small enough to train from scratch on a laptop CPU in minutes; float32 on CPU.
    "retinanet-mobilenetv2": Preset(
        experiment="retinanet",
        image_size=256,
        batch_size=8,
        steps=1500,
        learning_rate=0.08,
        warmup_fraction=0.05,
        aug_hflip=True,
        aug_scale_min=0.8,
        aug_scale_max=1.25,
        aug_type=None,
        overrides={
            "model": {
                "min_level": 3,
                "max_level": 6,
                "anchor": {"num_scales": 2, "aspect_ratios": [0.5, 1.0, 2.0], "anchor_size": 3.0},
                "backbone": {"type": "mobilenet", "mobilenet": {"model_id": "MobileNetV2", "filter_size_scale": 0.5}},
                "decoder": {"type": "fpn", "fpn": {"num_filters": 64, "use_separable_conv": True}},
                "head": {"num_convs": 2, "num_filters": 64, "use_separable_conv": True},
                "norm_activation": {"activation": "relu6", "norm_momentum": 0.97, "use_sync_bn": False},
                "detection_generator": {"max_num_detections": 100, "pre_nms_top_k": 1000},
            },
            "losses": {"l2_weight_decay": 4e-5},
        },
        description="RetinaNet, MobileNetV2 (x0.5) + separable FPN, 256 px: trains from scratch on a CPU",
    ),
    # The standard RetinaNet for GPUs (mixed float16) and TPUs (bfloat16).
    "retinanet-resnet50fpn": Preset(
        experiment="retinanet_resnetfpn_coco",
        image_size=640,
        batch_size=16,
        steps=20000,
        learning_rate=0.02,
        warmup_fraction=0.02,
        aug_hflip=True,
        aug_scale_min=0.8,
        aug_scale_max=1.2,
        aug_type=None,
        overrides={"model": {"norm_activation": {"use_sync_bn": False}}, "losses": {"l2_weight_decay": 1e-4}},
        description="RetinaNet, ResNet-50 + FPN, 640 px: the standard GPU/TPU detector",
    ),
}
DEFAULT_PRESET = "retinanet-mobilenetv2"

AUG_TYPES = {"none": None, "autoaugment": "autoaug", "randaugment": "randaug"}


# --------------------------------------------------------------------------- pure helpers


def select_runtime(strategy: str = "auto", tpu: str | None = None, num_gpus: int = 0) -> dict:
    """Distribution strategy and precision for the hardware.

    Returns {"distribution_strategy", "mixed_precision_dtype", "num_gpus", "tpu"} in Model Garden
    `runtime` terms: float32 on CPU, float16 (mixed) on GPUs, bfloat16 (mixed) on TPUs;
    MirroredStrategy over all local GPUs when there are several.
    """
    choices = ("auto", "cpu", "gpu", "mirrored", "tpu")
    if strategy not in choices:
        raise UserError(f"--strategy {strategy}: unknown; use one of {', '.join(choices)}")
    if strategy == "auto":
        strategy = "tpu" if tpu else "mirrored" if num_gpus > 1 else "gpu" if num_gpus == 1 else "cpu"
    if strategy == "tpu":
        if not tpu:
            raise UserError("--strategy tpu needs --tpu ADDRESS (e.g. 'local' or grpc://10.0.0.2:8470)")
        return {"distribution_strategy": "tpu", "mixed_precision_dtype": "bfloat16", "num_gpus": 0, "tpu": tpu}
    if strategy in ("gpu", "mirrored") and num_gpus < 1:
        raise UserError(f"--strategy {strategy}: no GPU is visible to TensorFlow; use --strategy cpu (or auto)")
    if strategy == "gpu":
        return {"distribution_strategy": "one_device", "mixed_precision_dtype": "float16", "num_gpus": 1, "tpu": ""}
    if strategy == "mirrored":
        return {"distribution_strategy": "mirrored", "mixed_precision_dtype": "float16", "num_gpus": num_gpus, "tpu": ""}
    return {"distribution_strategy": "one_device", "mixed_precision_dtype": "float32", "num_gpus": 0, "tpu": ""}


_DATA_SUFFIX = re.compile(r"\.(index|data-\d{5}-of-\d{5})$")


def resolve_checkpoint(path: str) -> str:
    """A checkpoint prefix from a folder, a prefix, or one of its `.index` / `.data-*` files.

    A folder resolves to its latest checkpoint (its `checkpoint` file, else the newest `*.index`).
    """
    import tensorflow as tf

    path = str(path).rstrip("/")
    prefix = _DATA_SUFFIX.sub("", path)
    if prefix != path or tf.io.gfile.exists(prefix + ".index"):
        if not tf.io.gfile.exists(prefix + ".index"):
            raise UserError(f"{path}: no {os.path.basename(prefix)}.index beside it; give the checkpoint folder or prefix")
        return prefix
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest and tf.io.gfile.exists(latest + ".index"):
            return latest
        indexes = tf.io.gfile.glob(path + "/*.index")
        if indexes:
            def step_of(p: str) -> int:
                m = re.search(r"-(\d+)\.index$", p)
                return int(m.group(1)) if m else -1

            return max(indexes, key=lambda p: (step_of(p), p))[: -len(".index")]
        raise UserError(f"{path}: folder holds no checkpoint (*.index); give a checkpoint folder, prefix or .index file")
    raise UserError(f"{path}: not a checkpoint folder, prefix, .index or .data-* file; check the path")


def _schedule(steps: int, learning_rate: float, warmup_fraction: float) -> dict:
    warmup = max(1, int(steps * warmup_fraction))
    return {
        "optimizer": {"type": "sgd", "sgd": {"momentum": 0.9}},
        "learning_rate": {
            "type": "cosine",
            "cosine": {"initial_learning_rate": learning_rate, "decay_steps": max(steps, 1), "alpha": 0.01},
        },
        "warmup": {"type": "linear", "linear": {"warmup_steps": warmup, "warmup_learning_rate": learning_rate * 0.05}},
    }


def _aug_config(aug_type: str | None) -> dict | None:
    if aug_type in (None, "none"):
        return None
    if aug_type not in AUG_TYPES.values():
        aug_type = AUG_TYPES.get(aug_type)
    if aug_type == "autoaug":
        return {"type": "autoaug", "autoaug": {"augmentation_name": "detection_v0"}}
    if aug_type == "randaug":
        return {"type": "randaug", "randaug": {"num_layers": 2, "magnitude": 5}}
    raise UserError(f"--aug-type: unknown policy; use one of {', '.join(AUG_TYPES)}")


def build_config(
    train_pattern: str,
    eval_pattern: str,
    label_map: dict[int, str],
    model: str = DEFAULT_PRESET,
    image_size: int | None = None,
    batch_size: int | None = None,
    steps: int | None = None,
    init_checkpoint: str | None = None,
    config_overrides: str | dict | None = None,
    runtime: dict | None = None,
    *,
    learning_rate: float | None = None,
    eval_interval: int | None = None,
    checkpoint_interval: int | None = None,
    steps_per_loop: int | None = None,
    eval_steps: int | None = None,
    eval_batch_size: int | None = None,
    init_checkpoint_modules: str = "all",
    aug_hflip: bool | None = None,
    aug_scale_min: float | None = None,
    aug_scale_max: float | None = None,
    aug_type: str | None = None,
):
    """The effective, validated and locked Model Garden `ExperimentConfig` for a training run.

    Pure apart from reading `config_overrides` when it is a path; no training or data reading.
    """
    from official.core import exp_factory
    from official.modeling import hyperparams
    from official.vision import registry_imports  # noqa: F401  (registers the experiments)

    preset = PRESETS.get(model)
    experiment = preset.experiment if preset else model
    try:
        config = exp_factory.get_exp_config(experiment)
    except (KeyError, LookupError, AssertionError):
        raise UserError(
            f"--model {model}: neither an odpipe preset ({', '.join(PRESETS)}) nor a registered Model Garden experiment"
        ) from None
    if not hasattr(config.task, "model") or not hasattr(config.task.model, "num_classes") or not hasattr(
        config.task, "train_data"
    ) or not hasattr(config.task.train_data, "parser"):
        raise UserError(f"--model {model}: experiment {experiment!r} is not an object-detection experiment")
    runtime = runtime or select_runtime("cpu")
    image_size = int(image_size or (preset.image_size if preset else config.task.model.input_size[0] or 640))
    batch_size = int(batch_size or (preset.batch_size if preset else 8))
    steps = int(steps or (preset.steps if preset else 10000))
    # Linear scaling of the preset's rate (tuned at its own batch size) to the batch actually used.
    lr = learning_rate or (preset.learning_rate * batch_size / preset.batch_size if preset else 0.01 * batch_size / 8)
    if image_size % 32 or image_size < 64:
        raise UserError(f"--image-size {image_size}: must be a multiple of 32 and at least 64 (e.g. 256, 384, 640)")
    if steps < 1 or batch_size < 1:
        raise UserError("--steps and --batch-size must be positive")
    eval_interval = int(eval_interval or max(1, min(steps, max(steps // 5, 100))))
    checkpoint_interval = int(checkpoint_interval or eval_interval)
    steps_per_loop = int(steps_per_loop or min(50, eval_interval, checkpoint_interval))
    if eval_interval % steps_per_loop or checkpoint_interval % steps_per_loop:
        steps_per_loop = math.gcd(eval_interval, checkpoint_interval, steps_per_loop)
    data_dtype = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}[runtime["mixed_precision_dtype"]]

    if preset:
        config.override({"task": preset.overrides}, is_strict=True)
    hflip = preset.aug_hflip if (aug_hflip is None and preset) else bool(aug_hflip)
    smin = aug_scale_min if aug_scale_min is not None else (preset.aug_scale_min if preset else 1.0)
    smax = aug_scale_max if aug_scale_max is not None else (preset.aug_scale_max if preset else 1.0)
    if not 0 < smin <= smax:
        raise UserError(f"--aug-scale-min {smin} / --aug-scale-max {smax}: need 0 < min <= max (e.g. 0.8 and 1.25)")
    aug = _aug_config(aug_type if aug_type is not None else (preset.aug_type if preset else None))
    task = {
        "model": {"num_classes": num_classes(label_map), "input_size": [image_size, image_size, 3]},
        "annotation_file": None,
        "use_coco_metrics": True,
        "per_category_metrics": True,
        "init_checkpoint": resolve_checkpoint(init_checkpoint) if init_checkpoint else None,
        "init_checkpoint_modules": init_checkpoint_modules,
        "train_data": {
            "input_path": train_pattern,
            "is_training": True,
            "global_batch_size": batch_size,
            "dtype": data_dtype,
            "shuffle_buffer_size": 1000,
            "drop_remainder": True,
            "parser": {
                "aug_rand_hflip": hflip,
                "aug_scale_min": smin,
                "aug_scale_max": smax,
                "max_num_instances": 100,
            },
        },
        "validation_data": {
            "input_path": eval_pattern,
            "is_training": False,
            "global_batch_size": int(eval_batch_size or min(batch_size, 8)),
            "dtype": data_dtype,
            "drop_remainder": False,
            "parser": {"max_num_instances": 100},
        },
    }
    if init_checkpoint_modules not in ("all", "backbone", "decoder", "backbone,decoder"):
        raise UserError(f"--init-checkpoint-modules {init_checkpoint_modules}: use all, backbone or backbone,decoder")
    if "," in init_checkpoint_modules:
        task["init_checkpoint_modules"] = init_checkpoint_modules.split(",")
    config.override(
        {
            "runtime": {
                "distribution_strategy": runtime["distribution_strategy"],
                "mixed_precision_dtype": runtime["mixed_precision_dtype"],
                "num_gpus": runtime["num_gpus"],
                "tpu": runtime["tpu"],
            },
            "task": task,
            "trainer": {
                "train_steps": steps,
                "validation_steps": int(eval_steps or -1),
                "validation_interval": eval_interval,
                "steps_per_loop": steps_per_loop,
                "summary_interval": steps_per_loop,
                "checkpoint_interval": checkpoint_interval,
                "max_to_keep": 3,
                "best_checkpoint_export_subdir": BEST_SUBDIR,
                "best_checkpoint_eval_metric": BEST_METRIC,
                "best_checkpoint_metric_comp": "higher",
                "optimizer_config": _schedule(steps, lr, preset.warmup_fraction if preset else 0.05),
            },
        },
        is_strict=False,
    )
    if aug is not None:
        config.override({"task": {"train_data": {"parser": {"aug_type": aug}}}}, is_strict=False)
    if config_overrides:
        source = config_overrides if isinstance(config_overrides, str) else "config overrides"
        if isinstance(config_overrides, str) and not config_overrides.lstrip().startswith("{") and "\n" not in config_overrides:
            if not storage.exists(config_overrides):
                raise UserError(f"{config_overrides}: config override file not found; check the path")
            config_overrides = storage.read_text(config_overrides)
        try:
            config = hyperparams.override_params_dict(config, config_overrides, is_strict=True)
        except KeyError as err:
            key = str(err).strip("'\"")
            raise UserError(f"{source}: {key}; fix the key (see MODEL_DIR/config.yaml for valid names)") from None
        except (ValueError, TypeError, AttributeError) as err:
            raise UserError(f"{source}: cannot apply override ({first_line(err)}); fix that value") from None
    try:
        config.validate()
    except (KeyError, ValueError, AssertionError) as err:
        raise UserError(f"config for --model {model}: invalid ({first_line(err)}); fix the override") from None
    config.lock()
    return config


def config_to_yaml(config) -> str:
    import yaml

    return yaml.safe_dump(config.as_dict(), default_flow_style=False, sort_keys=True)


def save_config(config, model_dir: str) -> str:
    import tensorflow as tf

    path = f"{model_dir.rstrip('/')}/config.yaml"
    tf.io.gfile.makedirs(model_dir)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(config_to_yaml(config))
    return path


def load_config(model_dir: str):
    """The effective config saved beside the checkpoints, as an `ExperimentConfig`."""
    import tensorflow as tf
    import yaml
    from official.core import exp_factory
    from official.vision import registry_imports  # noqa: F401

    path = f"{model_dir.rstrip('/')}/config.yaml"
    if not tf.io.gfile.exists(path):
        raise UserError(f"{path}: not found; is {model_dir} a model dir written by `odpipe train`?")
    with tf.io.gfile.GFile(path) as f:
        data = yaml.safe_load(f)
    meta_path = f"{model_dir.rstrip('/')}/odpipe.json"
    experiment = "retinanet"
    if tf.io.gfile.exists(meta_path):
        with tf.io.gfile.GFile(meta_path) as f:
            experiment = json.load(f).get("experiment", experiment)
    config = exp_factory.get_exp_config(experiment)
    config.override(data, is_strict=False)
    return config


# --------------------------------------------------------------------------- training


class EarlyStopping:
    """Stop after `patience` evaluations without a better metric (patience 0 = never stop)."""

    def __init__(self, patience: int = 0, min_delta: float = 1e-6):
        self.patience = int(patience)
        self.min_delta = min_delta
        self.best = -math.inf
        self.stale = 0

    def update(self, value: float) -> bool:
        """Record one evaluation; True when training should stop."""
        if math.isfinite(value) and value > self.best + self.min_delta:
            self.best, self.stale = value, 0
        else:
            self.stale += 1
        return bool(self.patience) and self.stale >= self.patience


class _Progress:
    """Orbit train action: logs step, loss, steps/s and ETA after every loop."""

    def __init__(self, global_step, total_steps: int, batch_size: int, echo):
        self.global_step = global_step
        self.total = total_steps
        self.batch_size = batch_size
        self.echo = echo
        self.last_step = int(global_step.numpy())
        self.last_time = time.monotonic()
        self.rates: list[float] = []
        self.losses: list[tuple[int, float]] = []

    def __call__(self, output) -> None:
        step = int(self.global_step.numpy())
        now = time.monotonic()
        rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
        self.last_step, self.last_time = step, now
        self.rates.append(rate)
        loss = float(output.get("total_loss", output.get("training_loss", float("nan"))))
        self.losses.append((step, loss))
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        self.echo(
            f"step {step}/{self.total}  loss {loss:.4f}  {rate:.2f} steps/s  "
            f"{rate * self.batch_size:.1f} images/s  ETA {_hms(eta)}"
        )


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _scalar_logs(logs: dict) -> dict:
    import numpy as np

    out = {}
    for k, v in (logs or {}).items():
        try:
            arr = np.asarray(v.numpy() if hasattr(v, "numpy") else v)
        except Exception:  # noqa: BLE001 - non-numeric summaries (images) are skipped
            continue
        if arr.size == 1 and arr.dtype.kind in "fiub":
            out[k] = float(arr.reshape(()))
    return out


def _check_patterns(train_pattern: str, eval_pattern: str) -> None:
    import tensorflow as tf

    for flag, pattern in (("--train", train_pattern), ("--eval", eval_pattern)):
        try:
            files = tf.io.gfile.glob(pattern)
        except tf.errors.OpError as err:
            raise UserError(f"{flag} {pattern}: cannot list ({first_line(err)}); check the path") from None
        if not files:
            raise UserError(f"{flag} {pattern}: no files match; write records with `odpipe tfrecord` or fix the pattern")


def _visible_gpus() -> int:
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def train(
    train_pattern: str,
    eval_pattern: str,
    label_map_path: str,
    model_dir: str,
    model: str = DEFAULT_PRESET,
    image_size: int | None = None,
    batch_size: int | None = None,
    steps: int | None = None,
    init_checkpoint: str | None = None,
    config_overrides: str | dict | None = None,
    strategy: str = "auto",
    tpu: str | None = None,
    **options: Any,
) -> dict:
    """Train (or resume training) a detector; returns {"step", "loss", "metrics", "model_dir", ...}.

    Options: learning_rate, eval_interval, checkpoint_interval, steps_per_loop, eval_steps,
    eval_batch_size, init_checkpoint_modules ("all" | "backbone"), aug_hflip, aug_scale_min,
    aug_scale_max, aug_type ("none" | "autoaugment" | "randaugment"), early_stopping (P evals
    without improvement of eval mAP@0.5; 0 = off), echo (a print-like callable).
    """
    echo = options.pop("echo", None) or (lambda msg: print(msg, flush=True))
    patience = int(options.pop("early_stopping", 0) or 0)
    label_map = read_label_map(label_map_path)
    _check_patterns(train_pattern, eval_pattern)
    runtime = select_runtime(strategy, tpu, _visible_gpus() if strategy in ("auto", "gpu", "mirrored") else 0)
    config = build_config(
        train_pattern, eval_pattern, label_map, model, image_size, batch_size, steps,
        init_checkpoint, config_overrides, runtime, **options,
    )
    return run_training(config, model_dir, label_map, model=model, patience=patience, echo=echo)


def run_training(config, model_dir: str, label_map: dict[int, str], model: str = "", patience: int = 0, echo=print) -> dict:
    """Train with an effective config (from `build_config`) into `model_dir`; resumes if possible."""
    import orbit
    import tensorflow as tf
    from official.common import distribute_utils
    from official.core import train_lib
    from official.modeling import performance

    model_dir = str(model_dir).rstrip("/")
    tf.io.gfile.makedirs(model_dir)
    save_config(config, model_dir)
    storage_label_map = f"{model_dir}/label_map.pbtxt"
    from odpipe.label_map import format_label_map

    with tf.io.gfile.GFile(storage_label_map, "w") as f:
        f.write(format_label_map(label_map))
    preset = PRESETS.get(model)
    with tf.io.gfile.GFile(f"{model_dir}/odpipe.json", "w") as f:
        json.dump({"model": model, "experiment": preset.experiment if preset else model}, f, indent=2)

    performance.set_mixed_precision_policy(getattr(tf, config.runtime.mixed_precision_dtype))
    dist = distribute_utils.get_distribution_strategy(
        distribution_strategy=config.runtime.distribution_strategy,
        num_gpus=config.runtime.num_gpus,
        tpu_address=config.runtime.tpu or None,
    )
    from odpipe.modeling.detection import build_task

    with dist.scope():
        task = build_task(config.task, logging_dir=model_dir)
    runner = train_lib.OrbitExperimentRunner(
        distribution_strategy=dist, task=task, mode="train_and_eval", params=config, model_dir=model_dir,
        run_post_eval=False,
    )
    trainer = runner.trainer
    global_step = trainer.global_step
    total = config.trainer.train_steps
    start = int(global_step.numpy())
    if start >= total:
        echo(f"already trained: step {start} >= --steps {total} in {model_dir}; raise --steps to train on")
    elif start:
        echo(f"resuming from step {start} (latest checkpoint in {model_dir})")
    progress = _Progress(global_step, total, config.task.train_data.global_batch_size, echo)
    controller: orbit.Controller = runner.controller
    controller.train_actions = list(controller.train_actions or []) + [progress]

    stopper, last_eval, stopped_early = EarlyStopping(patience), {}, False
    interval = config.trainer.validation_interval
    t0 = time.monotonic()
    with dist.scope():
        step = start
        while step < total:
            target = min(total, (step // interval + 1) * interval)
            controller.train(steps=target)
            step = int(global_step.numpy())
            last_eval = _scalar_logs(controller.evaluate(steps=config.trainer.validation_steps))
            progress.last_time = time.monotonic()  # steps/s and ETA count training time only
            value = last_eval.get(BEST_METRIC, float("nan"))
            echo(
                f"eval at step {step}: mAP {last_eval.get('AP', float('nan')):.3f}  "
                f"mAP@0.5 {value:.3f}  loss {last_eval.get('total_loss', float('nan')):.4f}"
            )
            if stopper.update(value) and step < total:
                echo(f"early stopping at step {step}: mAP@0.5 has not improved for {stopper.stale} evaluations")
                stopped_early = True
                break
        if controller.checkpoint_manager and step > 0:
            controller.checkpoint_manager.save(checkpoint_number=global_step, check_interval=False)
    best = _read_best(model_dir)
    if best is not None:
        with tf.io.gfile.GFile(f"{model_dir}/best.json", "w") as f:
            json.dump(best, f, indent=2)
    wall = time.monotonic() - t0
    rates = progress.rates[1:] or progress.rates
    result = {
        "step": int(global_step.numpy()),
        "start_step": start,
        "loss": progress.losses[-1][1] if progress.losses else last_eval.get("total_loss"),
        "losses": progress.losses,
        "metrics": last_eval,
        "best": best,
        "model_dir": model_dir,
        "steps_per_second": (sum(rates) / len(rates)) if rates else None,
        "wall_seconds": wall,
        "stopped_early": stopped_early,
        "precision": config.runtime.mixed_precision_dtype,
        "strategy": config.runtime.distribution_strategy,
    }
    with tf.io.gfile.GFile(f"{model_dir}/train_result.json", "w") as f:
        json.dump({k: v for k, v in result.items() if k != "losses"}, f, indent=2, default=float)
    return result


def _read_best(model_dir: str) -> dict | None:
    import tensorflow as tf

    path = f"{model_dir}/{BEST_SUBDIR}/info.json"
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        info = json.load(f)
    latest = tf.train.latest_checkpoint(f"{model_dir}/{BEST_SUBDIR}")
    return {
        "step": int(info.get("best_ckpt_global_step", -1)),
        "metric": BEST_METRIC,
        "value": info.get(BEST_METRIC),
        "mAP": info.get("AP"),
        "mAP@0.5": info.get("AP50"),
        "checkpoint": latest,
    }


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", required=True, help="train TFRecords glob (local or gs://)")
    parser.add_argument("--eval", required=True, help="eval TFRecords glob (local or gs://)")
    parser.add_argument("--label-map", required=True, help="label_map.pbtxt")
    parser.add_argument("--model-dir", required=True, help="checkpoints, summaries, config.yaml (local or gs://)")
    parser.add_argument(
        "--model", default=DEFAULT_PRESET,
        help=f"preset ({', '.join(PRESETS)}) or a registered Model Garden detection experiment (default {DEFAULT_PRESET})",
    )
    parser.add_argument("--image-size", type=int, help="square input size in pixels, multiple of 32 (preset default)")
    parser.add_argument("--batch-size", type=int, help="global batch size (preset default)")
    parser.add_argument("--steps", type=int, help="total training steps (preset default)")
    parser.add_argument("--learning-rate", type=float, help="peak learning rate of the warmup+cosine schedule")
    parser.add_argument("--eval-interval", type=int, help="steps between evaluations (default steps/5, >= 100)")
    parser.add_argument("--checkpoint-interval", type=int, help="steps between checkpoints (default = eval interval)")
    parser.add_argument("--eval-steps", type=int, help="eval batches per evaluation (default: all eval records)")
    parser.add_argument("--early-stopping", type=int, default=0, metavar="P",
                        help="stop after P evaluations without better mAP@0.5 (default 0 = off)")
    parser.add_argument("--init-checkpoint", help="fine-tune from a checkpoint folder, prefix, .index or .data-* file")
    parser.add_argument("--init-checkpoint-modules", default="all", help="all (whole model) or backbone (default all)")
    parser.add_argument("--config", dest="config_overrides", help="YAML of Model Garden overrides, applied strictly")
    parser.add_argument("--strategy", default="auto", choices=["auto", "cpu", "gpu", "mirrored", "tpu"])
    parser.add_argument("--tpu", help="TPU address (with --strategy tpu or auto)")
    flip = parser.add_mutually_exclusive_group()
    flip.add_argument("--hflip", dest="aug_hflip", action="store_true", default=None, help="random horizontal flips")
    flip.add_argument("--no-hflip", dest="aug_hflip", action="store_false", help="no horizontal flips")
    parser.add_argument("--aug-scale-min", type=float, help="scale jitter lower bound (preset default)")
    parser.add_argument("--aug-scale-max", type=float, help="scale jitter upper bound (preset default)")
    parser.add_argument("--aug-type", choices=list(AUG_TYPES), help="Model Garden AutoAugment/RandAugment policy")


def run(args: argparse.Namespace) -> int:
    logging.getLogger("absl").setLevel(logging.WARNING)
    options = {
        k: getattr(args, k)
        for k in ("learning_rate", "eval_interval", "checkpoint_interval", "eval_steps", "init_checkpoint_modules",
                  "aug_hflip", "aug_scale_min", "aug_scale_max", "aug_type", "early_stopping")
        if getattr(args, k) is not None
    }
    result = train(
        args.train, args.eval, args.label_map, args.model_dir, model=args.model, image_size=args.image_size,
        batch_size=args.batch_size, steps=args.steps, init_checkpoint=args.init_checkpoint,
        config_overrides=args.config_overrides, strategy=args.strategy, tpu=args.tpu, **options,
    )
    best = result["best"] or {}
    loss = result["loss"] if result["loss"] is not None else float("nan")
    print(
        f"trained to step {result['step']} in {result['model_dir']} "
        f"(loss {loss:.4f}; best mAP@0.5 {best.get('value', float('nan')):.3f} at step {best.get('step')})",
        file=sys.stdout,
    )
    return 0
