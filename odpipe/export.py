"""Export a trained model dir to a SavedModel (+ TFLite) that evaluate/predict and servers consume.

    odpipe export --model-dir runs/m1 -o exported/ [--checkpoint best|latest|PATH]
        [--tflite [float|fp16|int8] [--calibration-records GLOB]]

EXPORT_DIR/
  saved_model/          signatures (both output detection_boxes [B, N, 4] normalised
                        ymin, xmin, ymax, xmax; detection_scores [B, N]; detection_classes [B, N]
                        label-map ids (float32); num_detections [B] int32):
                          serving_default       inputs: tf.string [None], encoded JPEG/PNG, any sizes
                          serving_image_tensor  inputs: tf.uint8 [None, None, None, 3]
  saved_model/assets/   label_map.pbtxt, config.yaml
  label_map.pbtxt, config.yaml, export.json
  model.tflite          with --tflite {float,fp16,int8}: uint8 [1, S, S, 3] letterboxed input,
                        TFLite_Detection_PostProcess outputs and metadata (see odpipe.tflite)

Boxes: Model Garden's RetinaNet returns boxes in the pixels of the resized, padded model input;
here they are mapped back to the original image and divided by its size, so they are
normalised to the original image whatever its size or aspect ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import uuid

from odpipe import storage
from odpipe.errors import UserError, first_line
from odpipe.schema import EXPORT_COMPLETION
from odpipe.tflite import DEFAULT_CALIBRATION_IMAGES, QUANTIZATIONS, SIGNATURE_TFLITE  # noqa: F401 - re-exported

# Imported inside functions: TensorFlow, Model Garden and tf_keras (seconds of start-up) only inside the export itself.

SIGNATURE_BYTES = "serving_default"
SIGNATURE_TENSOR = "serving_image_tensor"
COMPLETION_FILE = EXPORT_COMPLETION  # written last: a folder without it is not a (complete) export
TFLITE_FILE = "model.tflite"
OUTPUT_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")  # read by odpipe.detector


def resolve_export_checkpoint(model_dir: str, checkpoint: str = "best") -> tuple[str, str]:
    """(checkpoint prefix, how it was chosen) for "best", "latest" or a path."""
    import tensorflow as tf

    from odpipe.train import BEST_SUBDIR, resolve_checkpoint

    model_dir = str(model_dir).rstrip("/")
    if checkpoint == "best":
        best = tf.train.latest_checkpoint(f"{model_dir}/{BEST_SUBDIR}")
        if best:
            return best, "best"
        latest = tf.train.latest_checkpoint(model_dir)
        if latest:
            return latest, "latest (no best checkpoint yet: no evaluation has run)"
        raise UserError(f"{model_dir}: no checkpoint found; train first with `odpipe train --model-dir {model_dir}`")
    if checkpoint == "latest":
        latest = tf.train.latest_checkpoint(model_dir)
        if not latest:
            raise UserError(f"{model_dir}: no checkpoint found; train first with `odpipe train --model-dir {model_dir}`")
        return latest, "latest"
    return resolve_checkpoint(checkpoint), "path"


def normalize_boxes(boxes, image_info):
    """Model-input pixel boxes [B, N, 4] (ymin, xmin, ymax, xmax) -> normalised to the original image.

    `image_info` [B, 4, 2] is Model Garden's [[orig h, w], [scaled h, w], [y, x scale], [y, x offset]];
    without augmentation the offset is 0, so original pixels = input pixels / scale.
    """
    import tensorflow as tf

    image_info = tf.cast(image_info, tf.float32)
    scale = tf.tile(image_info[:, 2:3, :], [1, 1, 2])  # [B, 1, 4]: y, x, y, x scale
    original = tf.tile(image_info[:, 0:1, :], [1, 1, 2])  # [B, 1, 4]: h, w, h, w of the original
    boxes = tf.cast(boxes, tf.float32) / scale / original
    return tf.clip_by_value(boxes, 0.0, 1.0)


class ServingModel:
    """Builds the RetinaNet of a config, restores a checkpoint and defines the serving functions."""

    def __init__(self, config, checkpoint_prefix: str):
        import tensorflow as tf
        import tf_keras
        from official.vision.modeling import factory
        from official.vision.ops import preprocess_ops

        tf_keras.mixed_precision.set_global_policy("float32")
        self.config = config
        params = config.task.model
        self.image_size = list(params.input_size[:2])
        pad = config.task.train_data.parser.pad
        self.padded_size = (
            list(preprocess_ops.compute_padded_size(self.image_size, 2**params.max_level)) if pad else self.image_size
        )
        self.keep_aspect_ratio = config.task.train_data.parser.keep_aspect_ratio
        if not hasattr(params, "anchor") or not hasattr(params, "head"):
            raise UserError(
                f"{checkpoint_prefix}: its config is not a RetinaNet experiment, the only kind export supports; "
                "train with a RetinaNet preset (retinanet-mobilenetv2, retinanet-resnet50fpn)"
            )
        params.detection_generator.nms_version = "v2" if params.detection_generator.nms_version not in (
            "v2", "batched", "v3") else params.detection_generator.nms_version
        input_specs = tf_keras.layers.InputSpec(shape=[None, *self.padded_size, 3])
        self.model = factory.build_retinanet(input_specs=input_specs, model_config=params)
        status = tf.train.Checkpoint(model=self.model).read(checkpoint_prefix)
        status.expect_partial().assert_existing_objects_matched()

    # -- graph pieces (traced inside tf.functions)
    def preprocess(self, image):
        """uint8 [H, W, 3] -> (float [Hp, Wp, 3] normalised, image_info [4, 2])."""
        import tensorflow as tf
        from official.vision.ops import preprocess_ops

        image = tf.cast(image, tf.float32)
        image = preprocess_ops.normalize_image(image, offset=preprocess_ops.MEAN_RGB, scale=preprocess_ops.STDDEV_RGB)
        image, info = preprocess_ops.resize_and_crop_image(
            image, self.image_size, padded_size=self.padded_size, aug_scale_min=1.0, aug_scale_max=1.0,
            keep_aspect_ratio=self.keep_aspect_ratio,
        )
        # reshape (not ensure_shape) pins the static shape with a TFLite builtin op.
        return tf.reshape(image, [*self.padded_size, 3]), tf.reshape(info, [4, 2])

    def detect(self, images, image_info):
        """Model + NMS on preprocessed images; boxes normalised to each original image."""
        import tensorflow as tf

        out = self.model.call(images=images, image_shape=image_info[:, 1, :], anchor_boxes=None, training=False)
        return {
            "detection_boxes": normalize_boxes(out["detection_boxes"], image_info),
            "detection_scores": tf.cast(out["detection_scores"], tf.float32),
            "detection_classes": tf.cast(out["detection_classes"], tf.float32),
            "num_detections": tf.cast(out["num_detections"], tf.int32),
        }

    def serve_images(self, images):
        import tensorflow as tf

        spec = (tf.TensorSpec([*self.padded_size, 3], tf.float32), tf.TensorSpec([4, 2], tf.float32))
        batch, info = tf.map_fn(self.preprocess, images, fn_output_signature=spec)
        return self.detect(batch, info)

    def serve_bytes(self, encoded):
        import tensorflow as tf

        def one(data):
            image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
            return self.preprocess(image)

        spec = (tf.TensorSpec([*self.padded_size, 3], tf.float32), tf.TensorSpec([4, 2], tf.float32))
        batch, info = tf.map_fn(one, encoded, fn_output_signature=spec)
        return self.detect(batch, info)


def _module(detector: ServingModel):
    import tensorflow as tf

    module = tf.Module()
    # Track the variables, not the Keras model: saving a Keras model also serialises every
    # layer's call functions, which is slow and not needed by the two signatures.
    module.weights = list(detector.model.variables)
    module.serve_bytes = tf.function(detector.serve_bytes, input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    module.serve_images = tf.function(
        detector.serve_images, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="inputs")]
    )
    return module


def export_model(model_dir: str, export_dir: str, checkpoint: str = "best", tflite: bool | str = False,
                 calibration_records=None, calibration_images: int = DEFAULT_CALIBRATION_IMAGES) -> dict:
    """Export the model in `model_dir` (config.yaml + checkpoint) to `export_dir`; returns a summary.

    `tflite`: False/None (no model.tflite), True or "float", "fp16", "int8". int8 is calibrated on up
    to `calibration_images` images of `calibration_records` (a pattern or a list; default: the
    training records named in the model's config)."""
    from odpipe.tflite import calibration_files, quantization_of

    quantization = quantization_of(tflite)
    if quantization == "int8" and calibration_images < 1:
        raise UserError(f"--calibration-images {calibration_images}: must be at least 1")

    from odpipe.label_map import read_label_map
    from odpipe.train import load_config

    model_dir = str(model_dir).rstrip("/")
    export_dir = str(export_dir).rstrip("/")
    config = load_config(model_dir)
    label_map = read_label_map(f"{model_dir}/label_map.pbtxt")
    prefix, chosen = resolve_export_checkpoint(model_dir, checkpoint)
    if quantization == "int8":
        calibration_files(calibration_records, config)  # fail before the slow SavedModel export
    staging = _staging_dir(export_dir)  # a bad -o fails here, before the slow export
    try:
        summary = _write_export(config, prefix, model_dir, label_map, staging, export_dir, quantization,
                                calibration_records, calibration_images)
        summary["checkpoint_choice"] = chosen
        storage.write_text(f"{staging}/{COMPLETION_FILE}", json.dumps(summary, indent=2))  # written last
        _swap_in(staging, export_dir)
    finally:
        storage.remove_tree(staging)
    return summary


def _write_export(config, prefix: str, model_dir: str, label_map: dict, staging: str, export_dir: str, quantization,
                  calibration_records, calibration_images: int) -> dict:
    """SavedModel, label map, config (+ model.tflite) into `staging`; the summary names `export_dir`."""
    import tensorflow as tf

    from odpipe.label_map import format_label_map, num_classes
    from odpipe.tflite import write_tflite
    from odpipe.train import config_to_yaml

    try:
        detector = ServingModel(config, prefix)
    except (AssertionError, ValueError, tf.errors.OpError) as err:
        raise UserError(
            f"{prefix}: checkpoint does not match the model in {model_dir}/config.yaml "
            f"({first_line(err, 160)}); pick a checkpoint of this model dir"
        ) from None
    module = _module(detector)
    signatures = {
        SIGNATURE_BYTES: module.serve_bytes.get_concrete_function(),
        SIGNATURE_TENSOR: module.serve_images.get_concrete_function(),
    }
    tf.saved_model.save(module, f"{staging}/saved_model", signatures=signatures)
    config_text = config_to_yaml(config)
    label_text = format_label_map(label_map)
    for folder in (staging, f"{staging}/saved_model/assets"):
        storage.write_text(f"{folder}/label_map.pbtxt", label_text)
        storage.write_text(f"{folder}/config.yaml", config_text)
    summary = {
        "export_dir": export_dir,
        "saved_model": f"{export_dir}/saved_model",
        "checkpoint": prefix,
        "checkpoint_choice": None,
        "step": _checkpoint_step(prefix),
        "signatures": [SIGNATURE_BYTES, SIGNATURE_TENSOR],
        "image_size": detector.image_size,
        "num_classes": num_classes(label_map),
        "classes": len(label_map),
        "label_map": {str(k): v for k, v in sorted(label_map.items())},
        "tflite": None,
    }
    if quantization:
        lite = write_tflite(detector, f"{staging}/{TFLITE_FILE}", quantization, label_map,
                            calibration_records=calibration_records, calibration_images_max=calibration_images)
        summary["tflite"] = dict(lite, path=f"{export_dir}/{TFLITE_FILE}")
    return summary


# -- one complete export or none: written aside, swapped in, export.json last --------------------


def _staging_dir(export_dir: str) -> str:
    """A new, writable sibling folder of `export_dir` to write the export into (OSError/UserError
    for an -o that cannot become an export folder)."""
    if storage.is_remote(export_dir):
        if storage.is_file(export_dir):
            raise UserError(f"{export_dir}: is a file; give -o a folder for the export")
    elif os.path.lexists(export_dir) and not os.path.isdir(export_dir):
        raise UserError(f"{export_dir}: is a file; give -o a folder for the export (or move that file)")
    existing = storage.list_files(export_dir) if storage.is_dir(export_dir) else []
    if existing and not any(f == COMPLETION_FILE or f.startswith("saved_model/") for f in existing):
        raise UserError(f"{export_dir}: holds files that are not an odpipe export ({existing[0]}, ...); "
                        "give -o a new or empty folder (an export replaces the whole folder)")
    parent, name = storage.split(export_dir)
    staging = storage.join(parent, f".{name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    storage.make_writable_dir(staging)
    return staging


def _swap_in(staging: str, export_dir: str) -> None:
    """Replace `export_dir` by the complete export in `staging`. Locally two renames (the old folder
    is moved aside, then deleted); on a bucket the old objects are deleted and the new ones copied,
    export.json last, so a reader never sees export.json beside files of another export."""
    if storage.is_remote(export_dir):
        storage.remove_tree(export_dir)
        files = [f for f in storage.list_files(staging) if f != COMPLETION_FILE]
        storage.copy_tree(staging, export_dir, files)
        storage.copy_tree(staging, export_dir, [COMPLETION_FILE])
        return
    old = None
    if os.path.isdir(export_dir):
        old = f"{staging}.old"
        os.rename(export_dir, old)
    try:
        os.rename(staging, export_dir)
    except OSError:
        if old:
            os.rename(old, export_dir)  # put the previous export back
        raise
    if old:
        storage.remove_tree(old)


def check_export(folder: str, shown: str | None = None) -> None:
    """UserError unless `folder` (local or gs://) holds a complete export: its export.json is written
    last, so an interrupted or failed `odpipe export` leaves a folder without it. Call it before
    evaluating, serving or publishing an export folder. `shown`: the name the user gave (e.g. the
    gs:// URI of a local copy)."""
    folder = str(folder).rstrip("/")
    shown = str(shown or folder).rstrip("/")
    if storage.exists(f"{folder}/{COMPLETION_FILE}"):
        return
    if not storage.is_dir(folder):
        raise UserError(f"{shown}: no such export folder; point at the folder written by `odpipe export -o`")
    raise UserError(
        f"{shown}: not a complete export (no {COMPLETION_FILE}: an interrupted or failed `odpipe export`, "
        f"or an older one); export again with `odpipe export --model-dir MODEL_DIR -o {shown}`"
    )


def _checkpoint_step(prefix: str) -> int | None:
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
        for key in ("global_step/.ATTRIBUTES/VARIABLE_VALUE", "step/.ATTRIBUTES/VARIABLE_VALUE"):
            if reader.has_tensor(key):
                return int(reader.get_tensor(key))
    except (tf.errors.OpError, ValueError):
        pass
    digits = os.path.basename(prefix).rsplit("-", 1)[-1]
    return int(digits) if digits.isdigit() else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", required=True, help="model dir written by `odpipe train` (local or gs://)")
    parser.add_argument("-o", "--output", required=True, help="export dir to write (local or gs://)")
    parser.add_argument("--checkpoint", default="best",
                        help="best (highest eval mAP@0.5), latest, or a checkpoint folder/prefix/.index/.data-* path")
    parser.add_argument("--tflite", nargs="?", const="float", choices=QUANTIZATIONS, default=None,
                        help="also write model.tflite: float (the default of a bare --tflite), fp16, or int8 "
                             "(full-integer, calibrated on --calibration-records)")
    parser.add_argument("--calibration-records", action="append", metavar="GLOB",
                        help="TFRecords whose images calibrate int8 (default: the training records of the "
                             "model's config; repeatable)")
    parser.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES,
                        help=f"images used for int8 calibration (default {DEFAULT_CALIBRATION_IMAGES})")


def run(args: argparse.Namespace) -> int:
    summary = export_model(args.model_dir, args.output, checkpoint=args.checkpoint, tflite=args.tflite,
                           calibration_records=args.calibration_records, calibration_images=args.calibration_images)
    print(f"exported {summary['checkpoint']} ({summary['checkpoint_choice']}, step {summary['step']}) "
          f"to {summary['saved_model']}")
    if summary["tflite"]:
        lite = summary["tflite"]
        calibrated = f", calibrated on {lite['calibration_images']} images" if lite["calibration_images"] else ""
        print(f"wrote {lite['path']} ({lite['type']}, {lite['bytes']:,} bytes, input {lite['input']['shape']}{calibrated})")
    return 0
