"""The effective Model Garden experiment config of a training run, and its helpers.

`build_config` takes a preset or any registered Model Garden detection experiment (presets are
registered experiments, see `presets.py`) and reads its defaults from that experiment's config:
input size, batch size, steps, peak learning rate (scaled linearly with the batch size), warmup
fraction, augmentation, start checkpoint. It fills in what odpipe knows (num_classes from the label
map, input paths, a warmup + cosine schedule sized to the steps), applies a user YAML override
strictly, then validates and locks. A number the user gives must be valid: 0 or a negative is an
error, never a default (None means "the experiment's default").
"""

from __future__ import annotations

import json
import math

import yaml

from odpipe import storage
from odpipe.errors import UserError, first_line
from odpipe.label_map import num_classes
from odpipe.storage import tfio
from odpipe.train.input_size import size_multiple
from odpipe.train.presets import DEFAULT_PRESET, PRESETS, register_presets, schedule
from odpipe.train.start import (  # noqa: F401  (INIT_MODULES, resolve_checkpoint, ...: re-exported)
    ARCHITECTURE_KEYS,
    DEFAULT_CHECKPOINT,
    INIT_MODULES,
    NO_CHECKPOINT,
    checkpoint_architecture,
    init_start,
    resolve_checkpoint,
)

# Model Garden (and with it TensorFlow) is imported inside the functions that build configs: it takes
# seconds, and the CLI, the settings check and the data report import this module without building one.

BEST_SUBDIR = "best"
BEST_METRIC = "AP50"  # COCO mAP@0.5, as reported by Model Garden's COCO evaluator.
AUG_TYPES = {"none": None, "autoaugment": "autoaug", "randaugment": "randaug"}


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


def absolute_patterns(pattern: str) -> str:
    """Record patterns (Model Garden's comma-joined input_path) with local ones made absolute: the
    saved config.yaml must name the same files from any working folder (export's int8 calibration,
    a resume, evaluate reading it later); gs:// URIs stay as they are."""
    return ",".join(storage.absolute(p) for p in str(pattern).split(",") if p)


def positive(flag: str, value, kind=int, allow=()):
    """`value` as `kind` when it is given; None stays None (the default). 0, negatives, NaN: errors."""
    if value is None or value in allow:
        return value
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise UserError(f"{flag} {value}: not a number; give a positive {kind.__name__}") from None
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0 or (kind is int and number != value):
        raise UserError(f"{flag} {value}: must be a positive {kind.__name__}; omit it for the default")
    return number


def peak_learning_rate(config) -> float:
    """The peak (initial) learning rate of an experiment's schedule; 0.01 when it has none."""
    lr = config.trainer.optimizer_config.learning_rate.get()
    rate = getattr(lr, "initial_learning_rate", None)
    if rate is None and getattr(lr, "values", None):
        rate = lr.values[0]
    return float(rate) if rate else 0.01


def warmup_fraction(config) -> float:
    warmup = config.trainer.optimizer_config.warmup.get()
    steps = config.trainer.train_steps
    if warmup is None or not getattr(warmup, "warmup_steps", None) or not steps:
        return 0.05
    return min(0.5, warmup.warmup_steps / steps)


def experiment_config(model: str):
    """The registered experiment `model` (an odpipe preset or a Model Garden experiment), unlocked."""
    from official.core import exp_factory

    register_presets()
    try:
        config = exp_factory.get_exp_config(model)
    except (KeyError, LookupError, AssertionError):
        raise UserError(
            f"--model {model}: neither an odpipe preset ({', '.join(PRESETS)}) nor a registered Model Garden experiment"
        ) from None
    task = config.task
    if not (hasattr(task, "model") and hasattr(task.model, "num_classes") and hasattr(task, "train_data")
            and hasattr(task.train_data, "parser")):
        raise UserError(f"--model {model}: experiment {model!r} is not an object-detection experiment")
    return config


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
    init_checkpoint_modules: str | None = None,
    aug_hflip: bool | None = None,
    aug_scale_min: float | None = None,
    aug_scale_max: float | None = None,
    aug_type: str | None = None,
):
    """The effective, validated and locked Model Garden `ExperimentConfig` for a training run.

    `init_checkpoint`: None or "default" = the experiment's published start (a preset's ImageNet
    backbone; not checked for reachability here), "none" (or "") = scratch, else a folder/prefix/.index/.data
    path. Pure apart from reading `config_overrides` when it is a path; no training or data reading.
    """
    config = experiment_config(model)
    runtime = runtime or select_runtime("cpu")
    loop = _loop_sizes(config, image_size, batch_size, steps, learning_rate, eval_interval, checkpoint_interval,
                       steps_per_loop, eval_steps, eval_batch_size)
    hflip, smin, smax = _augmentation(config.task.train_data.parser, aug_hflip, aug_scale_min, aug_scale_max)
    aug = _aug_config(aug_type)
    base = config.task
    start = init_start(init_checkpoint, init_checkpoint_modules, base.init_checkpoint, base.init_checkpoint_modules)
    task = _task_override(config, loop, label_map, start, train_pattern, eval_pattern,
                          {"aug_rand_hflip": hflip, "aug_scale_min": smin, "aug_scale_max": smax},
                          runtime["mixed_precision_dtype"])
    config.override({"runtime": {key: runtime[key] for key in RUNTIME_KEYS}, "task": task,
                     "trainer": _trainer_override(config, loop, _warmup(config, model, start))}, is_strict=True)
    if aug is not None:
        config.override({"task": {"train_data": {"parser": {"aug_type": aug}}}}, is_strict=True)
    _start_overrides(config, model, start)
    if config_overrides:
        config = apply_overrides(config, config_overrides)
    try:
        config.validate()
    except (KeyError, ValueError, AssertionError) as err:
        raise UserError(f"config for --model {model}: invalid ({first_line(err)}); fix the override") from None
    config.lock()
    return config


def check_image_size(image_size: int, model) -> None:
    """One-line error unless `image_size` suits the experiment's `task.model` (`input_size.size_multiple`)."""
    step = size_multiple(model)
    if image_size % step or image_size < max(64, step):
        lower, upper = max(step, image_size // step * step), max(step, -(-image_size // step) * step)
        near = f"{lower} or {upper}" if lower != upper else f"{upper}"
        raise UserError(f"--image-size {image_size}: this model needs a multiple of {step} (its coarsest feature map's "
                        f"stride) of at least {max(64, step)}; use {near}")


RUNTIME_KEYS = ("distribution_strategy", "mixed_precision_dtype", "num_gpus", "tpu")


def _loop_sizes(config, image_size, batch_size, steps, learning_rate, eval_interval, checkpoint_interval,
                steps_per_loop, eval_steps, eval_batch_size) -> dict:
    """The run's sizes: the user's numbers (checked: positive) or the experiment's defaults."""
    base = config.task
    image_size = positive("--image-size", image_size) or int(base.model.input_size[0] or 640)
    batch_size = positive("--batch-size", batch_size) or int(base.train_data.global_batch_size or 8)
    steps = positive("--steps", steps) or int(config.trainer.train_steps or 10000)
    # Linear scaling of the experiment's rate (tuned at its own batch size) to the batch actually used.
    lr = positive("--learning-rate", learning_rate, float) or (
        peak_learning_rate(config) * batch_size / int(base.train_data.global_batch_size or batch_size)
    )
    check_image_size(image_size, base.model)
    eval_interval = positive("--eval-interval", eval_interval) or max(1, min(steps, max(steps // 5, 100)))
    checkpoint_interval = positive("--checkpoint-interval", checkpoint_interval) or eval_interval
    steps_per_loop = positive("--steps-per-loop", steps_per_loop) or min(50, eval_interval, checkpoint_interval)
    if eval_interval % steps_per_loop or checkpoint_interval % steps_per_loop:
        steps_per_loop = math.gcd(eval_interval, checkpoint_interval, steps_per_loop)
    return {"image_size": image_size, "batch_size": batch_size, "steps": steps, "learning_rate": lr,
            "eval_interval": eval_interval, "checkpoint_interval": checkpoint_interval,
            "steps_per_loop": steps_per_loop, "eval_steps": positive("--eval-steps", eval_steps, allow=(-1,)),
            "eval_batch_size": positive("--eval-batch-size", eval_batch_size)}


def _augmentation(parser, aug_hflip, aug_scale_min, aug_scale_max) -> tuple[bool, float, float]:
    """(horizontal flip, scale min, scale max): the user's or the experiment's parser's."""
    hflip = parser.aug_rand_hflip if aug_hflip is None else bool(aug_hflip)
    smin = positive("--aug-scale-min", aug_scale_min, float) or parser.aug_scale_min
    smax = positive("--aug-scale-max", aug_scale_max, float) or parser.aug_scale_max
    if not 0 < smin <= smax:
        raise UserError(f"--aug-scale-min {smin} / --aug-scale-max {smax}: need 0 < min <= max (e.g. 0.8 and 1.25)")
    return hflip, smin, smax


def _task_override(config, loop: dict, label_map: dict[int, str], start: dict, train_pattern: str,
                   eval_pattern: str, augmentation: dict, precision: str) -> dict:
    """The `task` part of the run's override: classes, input size, start checkpoint, input data."""
    base = config.task
    data_dtype = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}[precision]
    modules = start["modules"] or "all"
    size, batch_size = loop["image_size"], loop["batch_size"]
    return {
        "model": {"num_classes": num_classes(label_map), "input_size": [size, size, 3]},
        "annotation_file": None,
        "use_coco_metrics": True,
        "per_category_metrics": True,
        "init_checkpoint": start["checkpoint"] or "",
        "init_checkpoint_modules": modules.split(",") if "," in modules else modules,
        "train_data": {
            "input_path": absolute_patterns(train_pattern),
            "is_training": True,
            "global_batch_size": batch_size,
            "dtype": data_dtype,
            "shuffle_buffer_size": 1000,
            "drop_remainder": True,
            "parser": {**augmentation, "max_num_instances": 100},
        },
        "validation_data": {
            "input_path": absolute_patterns(eval_pattern),
            "is_training": False,
            "global_batch_size": loop["eval_batch_size"] or min(batch_size,
                                                                int(base.validation_data.global_batch_size or 8)),
            "dtype": data_dtype,
            "drop_remainder": False,
            "parser": {"max_num_instances": 100},
        },
    }


def _warmup(config, model: str, start: dict) -> float:
    """The warmup's share of the steps: a preset's own from scratch, else the experiment's."""
    preset = PRESETS.get(model)
    if start["source"] == "none" and preset and preset.scratch_warmup_fraction:
        return preset.scratch_warmup_fraction
    return warmup_fraction(config)


def _trainer_override(config, loop: dict, warmup: float) -> dict:
    """The `trainer` part of the run's override: steps, intervals, best checkpoint, schedule."""
    return {
        "train_steps": loop["steps"],
        "validation_steps": loop["eval_steps"] or -1,
        "validation_interval": loop["eval_interval"],
        "steps_per_loop": loop["steps_per_loop"],
        "summary_interval": loop["steps_per_loop"],
        "checkpoint_interval": loop["checkpoint_interval"],
        "max_to_keep": 3,
        "best_checkpoint_export_subdir": BEST_SUBDIR,
        "best_checkpoint_eval_metric": BEST_METRIC,
        "best_checkpoint_metric_comp": "higher",
        "optimizer_config": schedule(loop["steps"], loop["learning_rate"], warmup),
    }


def _start_overrides(config, model: str, start: dict) -> None:
    """From scratch: the preset's scratch overrides; from a user's odpipe checkpoint: its architecture."""
    if start["source"] == "none":
        if model in PRESETS and PRESETS[model].scratch_overrides:
            config.override({"task": PRESETS[model].scratch_overrides}, is_strict=True)
    elif start["source"] == "user":  # fine-tuning from an odpipe model: rebuild its architecture
        architecture = checkpoint_architecture(start["checkpoint"])
        if architecture:
            config.override({"task": {"model": architecture}}, is_strict=True)


def overrides_kind(value: str) -> str:
    """"text" (inline YAML) or "path" (a YAML file, local or gs://): the one rule, decided here.
    YAML text has a newline, starts with "{" or holds ": "; anything else is a path."""
    value = str(value)
    return "text" if ("\n" in value or value.lstrip().startswith("{") or ": " in value) else "path"


def apply_overrides(config, overrides):
    """`overrides` (a dict, YAML text or a YAML file: `settings.overrides_kind`) applied strictly."""
    from official.modeling import hyperparams

    source = overrides if isinstance(overrides, str) else "config overrides"
    if isinstance(overrides, str) and overrides_kind(overrides) == "path":
        if not storage.exists(overrides):
            raise UserError(f"{overrides}: config override file not found; check the path")
        overrides = storage.read_text(overrides)
    try:
        return hyperparams.override_params_dict(config, overrides, is_strict=True)
    except KeyError as err:
        key = str(err).strip("'\"")
        raise UserError(f"{source}: {key}; fix the key (see MODEL_DIR/config.yaml for valid names)") from None
    except (ValueError, TypeError, AttributeError) as err:
        raise UserError(f"{source}: cannot apply override ({first_line(err)}); fix that value") from None


def config_to_yaml(config) -> str:
    return yaml.safe_dump(config.as_dict(), default_flow_style=False, sort_keys=True)


def save_config(config, model_dir: str) -> str:
    path = f"{model_dir.rstrip('/')}/config.yaml"
    tfio.makedirs(model_dir)
    tfio.write_text(path, config_to_yaml(config))
    return path


def load_config(model_dir: str):
    """The effective config saved beside the checkpoints, as an `ExperimentConfig`."""
    path = f"{model_dir.rstrip('/')}/config.yaml"
    if not tfio.exists(path):
        raise UserError(f"{path}: not found; is {model_dir} a model dir written by `odpipe train`?")
    data = yaml.safe_load(tfio.read_text(path))
    meta_path = f"{model_dir.rstrip('/')}/odpipe.json"
    experiment = "retinanet"
    if tfio.exists(meta_path):
        meta = json.loads(tfio.read_text(meta_path))
        experiment = meta.get("model") or meta.get("experiment", experiment)
    config = experiment_config(experiment)
    config.override(data, is_strict=False)
    return config
