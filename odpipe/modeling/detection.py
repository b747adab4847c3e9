"""Model Garden detection tasks, made safe for numpy 2.

The crash: Model Garden's RetinaNet parser (`official/vision/dataloaders/retinanet_input.py`)
stores each eval image's ground-truth count as `tf.shape(classes)`, a 1-element vector, so a
batch of them is [batch, 1]. `coco_utils.convert_groundtruths_to_coco_dataset` later calls
`int(num_detections[i][j])` on that 1-element array; numpy 1.25 deprecated converting non-0-d
arrays to Python scalars and numpy 2 raises "only 0-dimensional arrays can be converted to Python
scalars". The fix here reshapes the ground-truth counts to [batch] in `validation_step`, before
they reach the COCO evaluator, in a subclass of whichever task Model Garden registered for the
experiment (the installed library is not touched).

It also turns a start checkpoint that does not fit the model (another architecture, or `all` from
a detector with another number of classes) into a one-line error instead of a traceback.

The same subclass also keeps a small training set's *decoded* images in memory (RetinaNet tasks
reading TFRecords): on a CPU the input pipeline shares the cores with the model, and re-reading
and re-decoding every JPEG each epoch is about 15% of its CPU time per batch. Shuffling and all
augmentation (flip, scale jitter, anchor labelling) still run after the cache, so every step sees
freshly augmented images; larger sets keep Model Garden's streaming pipeline.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras
from official.core import base_task, task_factory

from odpipe.errors import UserError, first_line
from odpipe.storage import tfio

# Imported inside functions: Model Garden's modules inside the task's methods (registered before they are needed).

# This module imports TensorFlow itself; Model Garden's RetinaNet task, data loaders and optimizer
# factory are imported where they are used (each adds seconds, and not every caller needs them).

# Training images are cached decoded when their decoded size (height x width x 3 bytes, read from
# the records' image/height and image/width) is at most this, and their records at most
# DECODED_CACHE_SCAN_BYTES on disk (so the size check itself stays a quick scan).
DECODED_CACHE_BYTES = 1 << 30
DECODED_CACHE_SCAN_BYTES = 64 << 20


class Numpy2SafeGroundtruthsMixin:
    """Reshapes `labels['groundtruths']['num_detections']` from [B, 1] to [B] for COCO eval;
    caches small RetinaNet training sets decoded (see the module docstring)."""

    def initialize(self, model):
        """Model Garden's restore of `init_checkpoint`, with a one-line error when it does not fit."""
        try:
            return super().initialize(model)
        except (ValueError, AssertionError, tf.errors.OpError) as err:
            cfg = self.task_config
            modules = cfg.init_checkpoint_modules
            modules = ",".join(modules) if isinstance(modules, (list, tuple)) else modules
            raise UserError(
                f"{cfg.init_checkpoint}: cannot restore '{modules}' into this model ({first_line(err, 160)}); "
                "restore less (--init-checkpoint-modules backbone or backbone,decoder), match the architecture "
                "(--model), or pass --init-checkpoint none"
            ) from None

    # Set (before the trainer is built) to a tf.Variable holding the total steps: the schedule then
    # follows it, so a time budget can size the run after measuring its step rate (see PlannedWarmupCosine).
    planned_steps: tf.Variable | None = None

    def create_optimizer(self, optimizer_config, runtime_config=None, dp_config=None):
        """Model Garden's optimizer; with `planned_steps`, its warmup + cosine schedule follows that variable."""
        if self.planned_steps is None or dp_config is not None:
            return super().create_optimizer(optimizer_config, runtime_config, dp_config=dp_config)
        from official.modeling import optimization, performance

        factory = optimization.OptimizerFactory(optimizer_config)
        optimizer = factory.build_optimizer(PlannedWarmupCosine.from_config_of(optimizer_config, self.planned_steps))
        if runtime_config:
            optimizer = performance.configure_optimizer(
                optimizer, use_float16=runtime_config.mixed_precision_dtype == "float16",
                loss_scale=runtime_config.loss_scale)
        return optimizer

    # Set (before the trainer is built) to compile the train step with XLA (`jit_compile`): Model
    # Garden's trainer does so only on GPUs with `runtime.enable_xla`; this also covers the CPU.
    jit_compile: bool = False
    _jit_train_step = None

    def train_step(self, inputs, model, optimizer, metrics=None):
        if not self.jit_compile:
            return super().train_step(inputs, model, optimizer, metrics=metrics)
        if self._jit_train_step is None:
            self._jit_train_step = tf.function(super().train_step, jit_compile=True)  # as base_trainer does on GPUs
        return self._jit_train_step(inputs, model=model, optimizer=optimizer, metrics=metrics)

    # Set (before the inputs are built) to the share of training examples made mosaics of four (mosaic.py).
    mosaic: float = 0.0

    def build_inputs(self, params, input_context=None):
        files = _own_pipeline_files(self, params, input_context)
        if files is None:
            return super().build_inputs(params, input_context)
        cache = decoded_fits(files)
        if not cache and not self.mosaic:
            return super().build_inputs(params, input_context)
        return _retinanet_inputs(self, params, files, input_context, cache=cache)

    def validation_step(self, inputs, model, metrics=None):
        features, labels = inputs
        groundtruths = labels.get("groundtruths") if isinstance(labels, dict) else None
        if groundtruths is not None and "num_detections" in groundtruths:
            groundtruths = dict(groundtruths)
            groundtruths["num_detections"] = flatten_counts(groundtruths["num_detections"])
            labels = dict(labels, groundtruths=groundtruths)
        return super().validation_step((features, labels), model, metrics=metrics)


class PlannedWarmupCosine(tf_keras.optimizers.schedules.LearningRateSchedule):
    """Model Garden's linear warmup + cosine decay (`config.schedule`), over a total step count held in
    a variable: the same curve as `{"warmup": linear, "learning_rate": cosine}` for that total, and
    the total can be set once the run has measured how many steps fit its time budget."""

    def __init__(self, peak: float, warmup_fraction: float, warmup_start: float, alpha: float, total: tf.Variable):
        super().__init__()
        self.peak, self.warmup_fraction, self.warmup_start, self.alpha = peak, warmup_fraction, warmup_start, alpha
        self.total = total

    @classmethod
    def from_config_of(cls, optimizer_config, total: tf.Variable) -> "PlannedWarmupCosine":
        cosine = optimizer_config.learning_rate.get()
        warmup = optimizer_config.warmup.get()
        steps = max(int(cosine.decay_steps), 1)
        return cls(float(cosine.initial_learning_rate), float(warmup.warmup_steps) / steps,
                   float(warmup.warmup_learning_rate), float(cosine.alpha), total)

    def cosine(self, step, total):
        progress = tf.minimum(step, total) / total
        return self.peak * ((1 - self.alpha) * 0.5 * (1 + tf.cos(math.pi * progress)) + self.alpha)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        total = tf.maximum(tf.cast(self.total, tf.float32), 1.0)
        warmup = tf.maximum(tf.floor(total * self.warmup_fraction), 1.0)
        at_warmup_end = self.cosine(warmup, total)
        linear = self.warmup_start + step / warmup * (at_warmup_end - self.warmup_start)
        return tf.where(step < warmup, linear, self.cosine(step, total))

    def get_config(self):
        return {"peak": self.peak, "warmup_fraction": self.warmup_fraction, "warmup_start": self.warmup_start,
                "alpha": self.alpha, "total": int(self.total.numpy())}


def flatten_counts(counts: tf.Tensor) -> tf.Tensor:
    """Per-image counts as a [batch] vector, whether they come as [batch] or [batch, 1]."""
    counts = tf.convert_to_tensor(counts)
    if counts.shape.rank is not None and counts.shape.rank > 1:
        return tf.reshape(counts, [tf.shape(counts)[0]])
    return counts


_CLASSES: dict[type, type] = {}


def task_class_for(task_config) -> type:
    """The registered Model Garden task class for `task_config`, with the numpy-2 fix mixed in."""
    base = task_factory.get_task_cls(type(task_config))
    if base not in _CLASSES:
        _CLASSES[base] = type(f"Odpipe{base.__name__}", (Numpy2SafeGroundtruthsMixin, base), {})
    return _CLASSES[base]


def build_task(task_config, logging_dir: str | None = None) -> base_task.Task:
    """Instantiate the experiment's detection task (numpy-2-safe evaluation)."""
    return task_class_for(task_config)(task_config, logging_dir=logging_dir)


def _input_files(params) -> list[str]:
    patterns = params.input_path if not isinstance(params.input_path, str) else params.input_path.split(",")
    files: list[str] = []
    for pattern in patterns:
        files.extend(sorted(tfio.glob(str(pattern).strip())))
    return files


def decoded_bytes(files: list[str], scan_limit: int = DECODED_CACHE_SCAN_BYTES) -> int | None:
    """Bytes of the records' images once decoded to uint8 RGB, or None when unknown or the
    records are larger than `scan_limit` on disk (not worth scanning: they will not fit anyway)."""
    if not files or sum(tfio.size(f) for f in files) > scan_limit:
        return None
    spec = {
        "image/height": tf.io.FixedLenFeature([], tf.int64, default_value=0),
        "image/width": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    }
    sizes = tf.data.TFRecordDataset(files).batch(256).map(lambda r: tf.io.parse_example(r, spec))
    total = 0
    for batch in sizes:
        h, w = batch["image/height"].numpy(), batch["image/width"].numpy()
        if (h <= 0).any() or (w <= 0).any():
            return None  # records without sizes: cannot bound the memory
        total += int((h * w * 3).sum())
    return total


def _own_pipeline_files(task, params, input_context) -> list[str] | None:
    """The training files when odpipe's RetinaNet input (decoded cache, mosaic) can replace Model Garden's."""
    from official.vision.tasks.retinanet import RetinaNetTask

    if not (
        isinstance(task, RetinaNetTask) and params.is_training and not params.tfds_name and not params.cache
        and params.file_type == "tfrecord" and params.decoder.type == "simple_decoder"
        and not params.get("pseudo_label_data") and not params.enable_tf_data_service
        and (input_context is None or input_context.num_input_pipelines == 1)
        and isinstance(params.input_path, str)
    ):
        return None
    return _input_files(params)


def decoded_fits(files: list[str]) -> bool:
    """Whether the records' decoded images fit the in-memory cache (DECODED_CACHE_BYTES)."""
    size = decoded_bytes(files)
    return size is not None and size <= DECODED_CACHE_BYTES


def _cacheable_training_files(task, params, input_context) -> list[str] | None:
    """The training files when they are cached decoded in memory (the benchmarks report it)."""
    files = _own_pipeline_files(task, params, input_context)
    return files if files is not None and decoded_fits(files) else None


def _retinanet_inputs(task, params, files: list[str], input_context=None, cache: bool = True) -> tf.data.Dataset:
    """Model Garden's RetinaNet training input (same decoder, parser, shuffle, batch, prefetch), with the
    decoded examples cached in memory (`cache`) ahead of the shuffle, and the task's mosaic share
    (`mosaic.py`) ahead of the augmenting parser."""
    from official.vision.dataloaders import input_reader, input_reader_factory, retinanet_input, tf_example_decoder  # noqa: I001

    from odpipe.modeling.mosaic import mosaic_dataset

    decoder_cfg = params.decoder.get()
    decoder = tf_example_decoder.TfExampleDecoder(
        regenerate_source_id=decoder_cfg.regenerate_source_id, attribute_names=decoder_cfg.attribute_names
    )
    model = task.task_config.model
    parser = retinanet_input.Parser(  # the arguments RetinaNetTask.build_inputs passes
        output_size=model.input_size[:2],
        min_level=model.min_level,
        max_level=model.max_level,
        num_scales=model.anchor.num_scales,
        aspect_ratios=model.anchor.aspect_ratios,
        anchor_size=model.anchor.anchor_size,
        dtype=params.dtype,
        match_threshold=params.parser.match_threshold,
        unmatched_threshold=params.parser.unmatched_threshold,
        box_coder_weights=model.detection_generator.box_coder_weights,
        aug_type=params.parser.aug_type,
        aug_rand_hflip=params.parser.aug_rand_hflip,
        aug_rand_jpeg=params.parser.aug_rand_jpeg,
        aug_scale_min=params.parser.aug_scale_min,
        aug_scale_max=params.parser.aug_scale_max,
        skip_crowd_during_training=params.parser.skip_crowd_during_training,
        max_num_instances=params.parser.max_num_instances,
        pad=params.parser.pad,
        keep_aspect_ratio=params.parser.keep_aspect_ratio,
    )
    decoded = tf.data.TFRecordDataset(files, num_parallel_reads=min(len(files), 4) if len(files) > 1 else None)
    decoded = decoded.map(decoder.decode, num_parallel_calls=tf.data.AUTOTUNE)
    decoded = (decoded.cache() if cache else decoded).repeat()
    decoded = mosaic_dataset(decoded, task.mosaic, int(model.input_size[0]))
    reader = input_reader_factory.input_reader_generator(
        params,
        dataset_fn=tf.data.TFRecordDataset,
        decoder_fn=lambda example: example,  # decoded above, once
        combine_fn=input_reader.create_combine_fn(params),
        parser_fn=parser.parse_fn(True),
    )
    return reader.read(input_context=input_context, dataset=decoded)
