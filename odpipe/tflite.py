"""model.tflite for phones: float, fp16 or full-integer int8, in the on-device detector layout.

    input   "inputs" uint8 [1, S, S, 3]: RGB pixels 0..255 of the image letterboxed into S x S
            (resized keeping its aspect ratio, padded bottom/right); normalisation is in the graph
    outputs (TFLite_Detection_PostProcess, in this order)
            detection_boxes   [1, N, 4] ymin, xmin, ymax, xmax normalised to the S x S input
            detection_classes [1, N]    class index = label-map id - 1 (background skipped)
            detection_scores  [1, N]
            num_detections    [1]
    metadata (odpipe.tflite_metadata) with labels.txt, so the TFLite Task Library and MediaPipe
            Tasks' ObjectDetector load it as is.

S is the padded model input size of the training config. The RetinaNet's raw head outputs are
decoded and non-max suppressed by TFLite's built-in `TFLite_Detection_PostProcess` op, emitted from
a `tf.function(experimental_implements=...)` as Model Garden's detection generator does for
`nms_version="tflite"`, with the config's IoU, score threshold and max detections. Its NMS is the
fast, class-agnostic one (one class per box; Model Garden's TFLite default): the op's per-class
"regular" NMS loses whole classes when the interpreter runs on 2 threads (TF 2.20: 3 classes,
num_threads=2 -> the third class never appears), and phones run it multi-threaded.

int8 is post-training full-integer quantization (every op int8, uint8 input, float outputs),
calibrated on up to `calibration_images` images of the calibration records, letterboxed exactly
as at inference. Two pixels of each calibration image are set to 0 and 255 so the input's
quantization is exactly scale 1, zero point 0: the uint8 pixels a phone camera gives are fed as is.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from odpipe import __version__, storage, tflite_metadata
from odpipe.errors import UserError, first_line

# TensorFlow and Model Garden are imported inside the functions that convert or run a model: seconds
# of start-up that `odpipe export` without --tflite, and every importer of this module, do not need.
from odpipe.progress import progress_bar
from odpipe.quiet import native_noise_filtered
from odpipe.records.tfrecord import read_records
from odpipe.storage import tfio

QUANTIZATIONS = ("float", "fp16", "int8")
SIGNATURE_TFLITE = "serving_default"  # the one signature of model.tflite
DEFAULT_CALIBRATION_IMAGES = 300
INPUT_NAME = "inputs"
OUTPUT_ORDER = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
ROLES = {"detection_boxes": "location", "detection_classes": "category", "detection_scores": "score",
         "num_detections": "number of detections"}


def quantization_of(tflite) -> str | None:
    """None (no TFLite) or one of QUANTIZATIONS, from a bool (True = float) or a name."""
    if tflite is None or tflite is False or tflite == "" or (isinstance(tflite, str) and tflite.lower() == "none"):
        return None
    if tflite is True:
        return "float"
    if isinstance(tflite, str) and tflite.lower() in QUANTIZATIONS:
        return tflite.lower()
    raise UserError(f"--tflite {tflite!r}: not a TFLite type; use one of {', '.join(QUANTIZATIONS)}")


def letterbox(image, size: int):
    """uint8 [H, W, 3] -> (uint8 [size, size, 3], scale): resized keeping the aspect ratio so it fits,
    padded bottom/right with the mean pixel (what the SavedModel's padding is after normalisation)."""
    import tensorflow as tf
    from official.vision.ops import preprocess_ops

    mean = tf.constant(preprocess_ops.MEAN_RGB, tf.float32)
    centred = tf.cast(image, tf.float32) - mean
    out, info = preprocess_ops.resize_and_crop_image(
        centred, [size, size], padded_size=[size, size], aug_scale_min=1.0, aug_scale_max=1.0)
    pixels = tf.cast(tf.clip_by_value(tf.round(out + mean), 0.0, 255.0), tf.uint8)
    return tf.reshape(pixels, [size, size, 3]), info[2, 0]


def postprocess_signature(config, num_classes: int) -> str:
    """`experimental_implements` attributes of TFLite_Detection_PostProcess for this config
    (num_classes counts the background column 0, which the op skips)."""
    gen = config.task.model.detection_generator
    weights = list(gen.box_coder_weights or [1.0, 1.0, 1.0, 1.0])
    attrs = {
        "max_detections": ("i", int(gen.max_num_detections)),
        "max_classes_per_detection": ("i", 1),
        "detections_per_class": ("i", int(gen.max_num_detections)),
        "use_regular_nms": ("b", "false"),  # see the module docstring
        "nms_score_threshold": ("f", float(gen.pre_nms_score_threshold)),
        "nms_iou_threshold": ("f", float(gen.nms_iou_threshold)),
        "y_scale": ("f", float(weights[0])),
        "x_scale": ("f", float(weights[1])),
        "h_scale": ("f", float(weights[2])),
        "w_scale": ("f", float(weights[3])),
        "num_classes": ("i", int(num_classes) - 1),
    }
    parts = ['name: "TFLite_Detection_PostProcess"']
    for key, (kind, value) in attrs.items():
        text = f"{value:f}" if kind == "f" else value
        parts.append(f'attr {{ key: "{key}" value {{ {kind}: {text} }} }}')
    return " ".join(parts)


class LiteGraph:
    """The TFLite graph of a restored odpipe.export.ServingModel: raw head + in-graph NMS op."""

    def __init__(self, serving):
        from official.vision.ops import anchor

        self.serving = serving
        params = serving.config.task.model
        self.size = int(max(serving.padded_size))
        self.num_classes = int(params.num_classes)
        boxes = anchor.Anchor(
            min_level=params.min_level, max_level=params.max_level, num_scales=params.anchor.num_scales,
            aspect_ratios=params.anchor.aspect_ratios, anchor_size=params.anchor.anchor_size,
            image_size=[self.size, self.size],
        ).multilevel_boxes
        corners = np.concatenate([np.reshape(np.asarray(boxes[str(level)]), [-1, 4])
                                  for level in range(params.min_level, params.max_level + 1)])
        corners = corners / float(self.size)  # TFLite's post-processing wants normalised anchors
        self.anchors = np.stack([(corners[:, 0] + corners[:, 2]) / 2, (corners[:, 1] + corners[:, 3]) / 2,
                                 corners[:, 2] - corners[:, 0], corners[:, 3] - corners[:, 1]], axis=-1).astype(np.float32)
        self.implements = postprocess_signature(serving.config, self.num_classes)

    def raw(self, pixels):
        """float pixels [1, S, S, 3] 0..255 -> (box encodings [1, A, 4], sigmoid scores [1, A, K])."""
        import tensorflow as tf
        from official.vision.ops import preprocess_ops

        model = self.serving.model
        images = (pixels - tf.constant(preprocess_ops.MEAN_RGB, tf.float32)) / tf.constant(
            preprocess_ops.STDDEV_RGB, tf.float32)
        features = model.backbone(images, training=False)
        if model.decoder is not None:
            features = model.decoder(features, training=False)
        raw_scores, raw_boxes = model.head(features, training=False)[:2]
        levels = sorted(raw_scores, key=int)
        scores = tf.concat([tf.reshape(raw_scores[k], [1, -1, self.num_classes]) for k in levels], axis=1)
        boxes = tf.concat([tf.reshape(raw_boxes[k], [1, -1, 4]) for k in levels], axis=1)
        return boxes, tf.sigmoid(scores)

    def detect(self, pixels):
        import tensorflow as tf

        boxes, scores = self.raw(tf.cast(pixels, tf.float32))

        @tf.function(experimental_implements=self.implements)
        def post_process(input_boxes, input_scores, input_anchors):  # noqa: ARG001 - replaced by the TFLite op
            # No TensorFlow equivalent: the converter swaps this function for the TFLite op.
            zero = tf.constant(0.0, tf.float32)
            return zero, zero, zero, zero

        out = post_process(boxes, scores, tf.constant(self.anchors))
        return dict(zip(OUTPUT_ORDER, out))


def calibration_files(patterns, config=None) -> list[str]:
    """The TFRecord files that calibrate int8: `patterns` (a pattern or a list), or by default the
    training records named in the model's config. A UserError when nothing matches."""
    if not patterns and config is not None:
        patterns = config.task.train_data.input_path
    patterns = [patterns] if isinstance(patterns, str) else [str(p) for p in (patterns or [])]
    patterns = [p for q in patterns for p in q.split(",") if p]  # Model Garden's input_path may be comma-joined
    if not patterns:
        raise UserError("int8 needs calibration images; pass --calibration-records 'records/train-*.tfrecord'")
    files = sorted({f for p in patterns for f in storage.glob(p)})
    if not files:
        raise UserError(f"{' '.join(patterns)}: no TFRecord file matches for int8 calibration; "
                        "pass --calibration-records with the training records (e.g. records/train-*.tfrecord)")
    return files


def calibration_images(files: list[str], count: int, size: int):
    """Up to `count` letterboxed uint8 [1, size, size, 3] images from TFRecords (`image/encoded`),
    taken from the files in turn (shards are a sample each). Returns (images, files read,
    records skipped because their image does not decode)."""
    import tensorflow as tf

    images, skipped = [], 0
    readers = {path: _records(path) for path in files}
    while readers and len(images) < count:
        for path in list(readers):
            try:
                serialized = next(readers[path], None)
            except tf.errors.OpError as err:
                raise UserError(f"{path}: not a readable TFRecord file ({first_line(err)}); "
                                "pass --calibration-records with records written by `odpipe tfrecord`") from None
            if serialized is None:
                del readers[path]
                continue
            feature = tf.train.Example.FromString(serialized).features.feature.get("image/encoded")
            try:
                image = tf.io.decode_image(feature.bytes_list.value[0], channels=3, expand_animations=False)
            except (AttributeError, IndexError, tf.errors.OpError):
                skipped += 1
                continue
            boxed = letterbox(image, size)[0].numpy()
            boxed[0, 0], boxed[0, 1] = 0, 255  # pins the input quantization to scale 1, zero point 0
            images.append(boxed[None])
            if len(images) >= count:
                break
    if not images:
        raise UserError(f"{' '.join(files)}: no decodable image for int8 calibration ({skipped} skipped); "
                        "pass --calibration-records with the training records")
    return images, files, skipped


def _records(path: str):
    yield from read_records(path)


def convert(serving, quantization: str, calibration: list | None = None) -> bytes:
    """The .tflite bytes (without metadata) of a restored ServingModel."""
    import tensorflow as tf

    graph = LiteGraph(serving)
    holder = tf.Module()
    holder.weights = list(serving.model.variables)
    dtype = tf.float32 if quantization == "int8" else tf.uint8  # int8: the converter makes it uint8
    holder.serve = tf.function(graph.detect, input_signature=[
        tf.TensorSpec([1, graph.size, graph.size, 3], dtype, name=INPUT_NAME)])
    with tempfile.TemporaryDirectory(prefix="odpipe-tflite-") as tmp:
        tf.saved_model.save(holder, tmp, signatures={SIGNATURE_TFLITE: holder.serve.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=[SIGNATURE_TFLITE])
        converter.allow_custom_ops = True  # TFLite_Detection_PostProcess: a custom op every interpreter ships
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantization == "fp16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "int8":
            images = list(calibration or [])

            def representative():
                with progress_bar(len(images), "export: int8 calibration", "img") as bar:
                    for image in images:
                        yield {INPUT_NAME: image.astype(np.float32)}
                        bar.update(1)

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
        return converter.convert()


def write_tflite(serving, path: str, quantization: str, label_map: dict[int, str],
                 calibration_records=None, calibration_images_max: int = DEFAULT_CALIBRATION_IMAGES) -> dict:
    """Convert, add metadata, write `path`; returns the export.json "tflite" summary."""
    import tensorflow as tf

    size = int(max(serving.padded_size))
    calibration, files_read, skipped = None, [], 0
    if quantization == "int8":
        if calibration_images_max < 1:
            raise UserError(f"--calibration-images {calibration_images_max}: must be at least 1")
        files = calibration_files(calibration_records, serving.config)
        calibration, files_read, skipped = calibration_images(files, calibration_images_max, size)
    try:
        with native_noise_filtered():
            data = convert(serving, quantization, calibration)
    except (ValueError, RuntimeError) as err:  # the converter's errors
        raise UserError(f"{path}: TFLite {quantization} conversion failed ({first_line(err, 200)})") from None
    with native_noise_filtered():
        interpreter = tf.lite.Interpreter(model_content=data)
    runner_outputs = interpreter.get_signature_runner(SIGNATURE_TFLITE).get_output_details()
    # The converter orders the outputs its own way; on-device detectors read them as boxes,
    # classes, scores, count (TFLite_Detection_PostProcess's order), so they are put in that order.
    order = list(OUTPUT_ORDER)
    output_indices = [int(runner_outputs[name]["index"]) for name in order]
    input_detail = interpreter.get_input_details()[0]
    scale, zero_point = input_detail["quantization"]
    if input_detail["dtype"] != np.uint8 or (scale not in (0.0, 1.0) or zero_point != 0):
        raise UserError(f"{path}: the converter gave input {input_detail['dtype'].__name__} scale {scale} zero point "
                        f"{zero_point}, not raw uint8 pixels; report this with the model's config.yaml")
    label_text = tflite_metadata.label_file_text(label_map, int(serving.config.task.model.num_classes))
    metadata = tflite_metadata.build_metadata(
        name="odpipe RetinaNet detector",
        description=f"RetinaNet ({quantization}) trained with odpipe; {len(label_map)} classes; "
                    f"input letterboxed to {size}x{size}, boxes normalised to the input",
        version=str(__version__), author="odpipe", license_text="",
        norm_mean=[0.0], norm_std=[1.0], input_uint8=True,
        output_roles=[ROLES[name] for name in order],
    )
    data = tflite_metadata.populate(data, metadata, label_text, outputs=output_indices)
    tfio.write_bytes(path, data)
    return {
        "path": path,
        "type": quantization,
        "bytes": len(data),
        "signature": SIGNATURE_TFLITE,
        "input": {"name": INPUT_NAME, "shape": [1, size, size, 3], "dtype": "uint8", "letterbox": True},
        "outputs": order,
        "calibration_images": len(calibration) if calibration else 0,
        "calibration_records": [str(f) for f in files_read],
        "calibration_skipped": skipped,
        "metadata": {"labels": tflite_metadata.LABEL_FILE, "norm_mean": [0.0], "norm_std": [1.0]},
    }


class LiteModel:
    """A model.tflite of this layout, run like the SavedModel: encoded images in, detection_boxes
    normalised to each original image, detection_classes as label-map ids, out."""

    def __init__(self, data: bytes, where: str):
        import tensorflow as tf

        self.where = where
        self._first_run = True
        try:
            with native_noise_filtered():
                self.interpreter = tf.lite.Interpreter(model_content=data, num_threads=max(1, os.cpu_count() or 1))
                self.runner = self.interpreter.get_signature_runner(SIGNATURE_TFLITE)
        except (ValueError, RuntimeError) as err:
            raise UserError(f"{where}: not a TFLite model odpipe can run ({first_line(err)}); "
                            "export it with `odpipe export --tflite`") from None
        inputs = self.runner.get_input_details()
        outputs = self.runner.get_output_details()
        if INPUT_NAME not in inputs or set(outputs) != set(OUTPUT_ORDER):
            raise UserError(f"{where}: signature `{SIGNATURE_TFLITE}` has inputs {sorted(inputs)} and outputs "
                            f"{sorted(outputs)}, not odpipe's detector layout; re-export with `odpipe export --tflite`")
        detail = inputs[INPUT_NAME]
        shape = [int(v) for v in detail["shape"]]
        if len(shape) != 4 or shape[0] != 1 or shape[1] != shape[2] or shape[3] != 3:
            raise UserError(f"{where}: input shape {shape} is not [1, S, S, 3]; re-export with `odpipe export --tflite`")
        self.size = shape[1]
        self.dtype = detail["dtype"]
        self.quantization = tuple(detail.get("quantization", (0.0, 0)))

    def run_image(self, image) -> dict[str, np.ndarray]:
        """Outputs for one decoded uint8 [H, W, 3] image, boxes normalised to it."""
        height, width = int(image.shape[0]), int(image.shape[1])
        boxed, scale = letterbox(image, self.size)
        pixels = boxed.numpy()[None]
        scale_q, zero = self.quantization
        if self.dtype != np.uint8 or (scale_q not in (0.0, 1.0) or zero != 0):
            pixels = pixels.astype(np.float32)
            if self.dtype != np.float32 and scale_q:
                info = np.iinfo(self.dtype)
                pixels = np.clip(np.round(pixels / scale_q + zero), info.min, info.max)
            pixels = pixels.astype(self.dtype)
        if self._first_run:  # the interpreter announces its delegate on the first run
            with native_noise_filtered():
                out = self.runner(**{INPUT_NAME: pixels})
            self._first_run = False
        else:
            out = self.runner(**{INPUT_NAME: pixels})
        boxes = np.asarray(out["detection_boxes"], np.float32)  # normalised to the S x S input
        factor = self.size / float(scale)
        boxes = boxes * factor / np.array([height, width, height, width], np.float32)
        return {
            "detection_boxes": np.clip(boxes, 0.0, 1.0),
            "detection_scores": np.asarray(out["detection_scores"], np.float32),
            "detection_classes": np.asarray(out["detection_classes"], np.float32) + 1.0,  # index -> label-map id
            "num_detections": np.asarray(out["num_detections"], np.float32).reshape(1),
        }

    def run_images(self, images) -> dict[str, np.ndarray]:
        results = [self.run_image(image) for image in images]
        return {key: np.concatenate([r[key] for r in results]) for key in OUTPUT_ORDER}

    def run_bytes(self, encoded) -> dict[str, np.ndarray]:
        """Outputs for a batch of encoded images; an undecodable one raises tf.errors.OpError."""
        import tensorflow as tf

        images = [tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8) for data in encoded]
        return self.run_images(images)
