"""Load an exported detector (the export directory contract) and run it on encoded images.

    EXPORT_DIR/saved_model/      SavedModel; signatures `serving_default` (inputs: tf.string [None],
                                 encoded JPEG/PNG bytes) and `serving_image_tensor` (inputs: uint8
                                 [None, None, None, 3]); outputs detection_boxes [B, N, 4] normalised
                                 (ymin, xmin, ymax, xmax), detection_scores [B, N], detection_classes
                                 (label-map ids) [B, N], num_detections [B]
    EXPORT_DIR/label_map.pbtxt   {id: name} (also saved_model/assets/label_map.pbtxt)
    EXPORT_DIR/config.yaml       the effective training config

    EXPORT_DIR/model.tflite      or, given a path ending in .tflite, that TFLite model (odpipe.tflite:
                                 letterboxed uint8 input, TFLite_Detection_PostProcess outputs); its
                                 label map is label_map.pbtxt beside it, else its metadata's labels.txt

`Detector` is used by both `odpipe evaluate` and `odpipe predict`. A `gs://` export is copied to a
local temporary folder first (through odpipe.storage, so the storage emulator is honoured).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass

import numpy as np

from odpipe import storage
from odpipe.errors import UserError, first_line
from odpipe.export import OUTPUT_KEYS, SIGNATURE_BYTES, SIGNATURE_TENSOR, check_export  # the contract, by its producer
from odpipe.label_map import read_label_map
from odpipe.records.images import Rejected, prepare_image

# Imported inside functions: TensorFlow and Pillow (seconds) only when a model is loaded or an image decoded.


@dataclass
class Detection:
    """One detection; `box` is (xmin, ymin, xmax, ymax) in pixels of the stored image."""

    class_id: int
    name: str
    score: float
    box: tuple[float, float, float, float]

    def as_dict(self) -> dict:
        xmin, ymin, xmax, ymax = self.box
        return {
            "class": self.name,
            "id": self.class_id,
            "score": round(self.score, 5),
            "box": {"xmin": round(xmin, 2), "ymin": round(ymin, 2), "xmax": round(xmax, 2), "ymax": round(ymax, 2)},
        }


def _copy_remote_dir(uri: str, flag: str = "--model") -> str:
    """Copy every object under `uri` to a new local temp folder; returns that folder."""
    files = storage.list_files(uri)
    if not files:
        raise UserError(f"{uri}: no files there; point {flag} at the folder `odpipe export -o` wrote")
    local = tempfile.mkdtemp(prefix="odpipe-export-")
    storage.copy_tree(uri, local, files)
    return local


class Detector:
    """An exported model plus its label map; call it on a list of encoded image bytes.

    `flag` names the option the folder came from in error messages (--model, --champion)."""

    def __init__(self, export_dir: str, flag: str = "--model"):
        self.export_dir = str(export_dir)
        self._tempdir = None
        self._lite = None
        self._warned_fallback = False
        if self.export_dir.lower().endswith(".tflite"):
            self._load_tflite(self.export_dir, flag)
            return
        local = self.export_dir
        if storage.is_remote(local):
            local = self._tempdir = _copy_remote_dir(local, flag)
        saved_model = os.path.join(local, "saved_model")
        if not os.path.isdir(saved_model):
            if os.path.isfile(os.path.join(local, "saved_model.pb")):
                # EXPORT_DIR/saved_model itself (a registry version's artifact_uri; Vertex copies only
                # it to AIP_STORAGE_URI): its label map is in its assets, and the export's swap-in
                # means a saved_model/ in place is a complete one
                saved_model = local
                local = os.path.dirname(local.rstrip(os.sep))
            else:
                raise UserError(
                    f"{self.export_dir}: no saved_model/ folder; point {flag} at the folder written by "
                    "`odpipe export -o EXPORT_DIR`"
                )
        else:
            check_export(local, shown=self.export_dir if local == self._tempdir else None)
        self.label_map: dict[int, str] = _export_label_map(local, saved_model, self.export_dir)
        import tensorflow as tf

        try:
            self._model = tf.saved_model.load(saved_model)
        except (OSError, ValueError, tf.errors.OpError) as err:
            raise UserError(
                f"{saved_model}: cannot load the SavedModel ({first_line(err)}); re-export with `odpipe export`"
            ) from None
        signatures = self._model.signatures
        if SIGNATURE_BYTES not in signatures:
            raise UserError(
                f"{saved_model}: no `{SIGNATURE_BYTES}` signature (has: {', '.join(signatures) or 'none'}); "
                "re-export with `odpipe export`"
            )
        self._bytes_fn = signatures[SIGNATURE_BYTES]
        self._tensor_fn = signatures.get(SIGNATURE_TENSOR)

    def _load_tflite(self, path: str, flag: str) -> None:
        """A model.tflite from `odpipe export --tflite`; its label map is the labels.txt packed in its
        metadata (a label_map.pbtxt beside it must agree), else the label_map.pbtxt beside it."""
        from odpipe.tflite import LiteModel
        from odpipe.tflite_metadata import read_label_file

        try:
            data = storage.read_bytes(path)
        except FileNotFoundError:
            raise UserError(f"{path}: no such file; point {flag} at a model.tflite written by `odpipe export --tflite`") from None
        folder = path.rsplit("/", 1)[0] if "/" in path else "."
        if storage.exists(storage.join(folder, "saved_model")):  # inside an export folder: it must be complete
            check_export(folder)
        beside = storage.join(folder, "label_map.pbtxt")
        inside = read_label_file(data)
        if storage.exists(beside):
            self.label_map = _agreeing(read_label_map(beside), beside, inside, f"{path} (its metadata's labels.txt)")
        elif inside is None:
            raise UserError(f"{path}: no label_map.pbtxt beside it and no labels.txt in its metadata; "
                            "re-export with `odpipe export --tflite`")
        else:
            self.label_map = inside
        self._lite = LiteModel(data, path)
        self._bytes_fn = self._tensor_fn = None

    def close(self) -> None:
        if self._tempdir:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- raw model calls ---------------------------------------------------------------------

    @staticmethod
    def _outputs(result) -> dict[str, np.ndarray]:
        missing = [k for k in OUTPUT_KEYS if k not in result]
        if missing:
            raise UserError(
                f"the exported model lacks output(s) {', '.join(missing)}; re-export with `odpipe export`"
            )
        boxes = np.asarray(result["detection_boxes"], dtype=np.float32)
        scores = np.asarray(result["detection_scores"], dtype=np.float32)
        classes = np.rint(np.asarray(result["detection_classes"], dtype=np.float64)).astype(np.int64)
        num = np.rint(np.asarray(result["num_detections"], dtype=np.float64)).astype(np.int64).reshape(-1)
        return {"detection_boxes": boxes, "detection_scores": scores, "detection_classes": classes, "num_detections": num}

    def run_bytes(self, encoded) -> dict[str, np.ndarray]:
        """Raw outputs for a batch of encoded images (a list of bytes or a tf.string [B] tensor)."""
        import tensorflow as tf

        if self._lite is not None:
            return self._outputs(self._lite.run_bytes(list(encoded.numpy()) if isinstance(encoded, tf.Tensor) else encoded))
        tensor = encoded if isinstance(encoded, tf.Tensor) else tf.constant(list(encoded), dtype=tf.string)
        return self._outputs(self._bytes_fn(inputs=tensor))

    def run_tensor(self, images) -> dict[str, np.ndarray]:
        """Raw outputs for a uint8 [B, H, W, 3] batch (the `serving_image_tensor` signature)."""
        import tensorflow as tf

        if self._lite is not None:
            return self._outputs(self._lite.run_images(np.asarray(images, dtype=np.uint8)))
        if self._tensor_fn is None:
            raise UserError(f"{self.export_dir}: no `{SIGNATURE_TENSOR}` signature; re-export with `odpipe export`")
        return self._outputs(self._tensor_fn(inputs=tf.convert_to_tensor(images, dtype=tf.uint8)))

    def detect_bytes(self, encoded: list[bytes]) -> list[dict[str, np.ndarray] | str]:
        """Per image: its raw outputs (arrays cut to num_detections) or, if the model cannot read
        it, a one-line reason. One bad image never loses the rest of the batch; an image that
        TensorFlow cannot decode goes through the records stage's check (`_retry_converted`)."""
        encoded = list(encoded)
        results = self._detect_bytes(encoded)
        return [
            self._retry_converted(data, r) if isinstance(r, str) else r for data, r in zip(encoded, results)
        ]

    def _detect_bytes(self, encoded: list[bytes]) -> list[dict[str, np.ndarray] | str]:
        import tensorflow as tf

        encoded = list(encoded)
        if not encoded:
            return []
        try:
            return self._split(self.run_bytes(encoded), len(encoded))
        except tf.errors.OpError as err:
            if len(encoded) == 1:
                return [_reason(err)]
            if not self._warned_fallback:
                print(
                    f"odpipe: warning: a batch failed ({_reason(err)}); running its images one by one",
                    file=sys.stderr,
                )
                self._warned_fallback = True
        results: list[dict[str, np.ndarray] | str] = []
        for data in encoded:
            try:
                results.extend(self._split(self.run_bytes([data]), 1))
            except tf.errors.OpError as err:
                results.append(_reason(err))
        return results

    def _retry_converted(self, data: bytes, reason: str) -> dict[str, np.ndarray] | str:
        """An image TensorFlow cannot decode, checked, converted or repaired by the records stage's
        rule (`odpipe.records.images.prepare_image`: TIFF/BMP/CMYK... converted, a JPEG that only
        lacks its end repaired), run again; the model's reason stands for an image that rule rejects."""
        import tensorflow as tf

        try:
            prepared = prepare_image(data)
        except Rejected:
            return reason
        if prepared.data == data:
            return reason
        try:
            return self._split(self.run_bytes([prepared.data]), 1)[0]
        except tf.errors.OpError:
            return reason

    @staticmethod
    def _split(out: dict[str, np.ndarray], n: int) -> list[dict[str, np.ndarray]]:
        per_image = []
        for i in range(n):
            k = int(out["num_detections"][i])
            per_image.append(
                {
                    "boxes": out["detection_boxes"][i, :k],
                    "scores": out["detection_scores"][i, :k],
                    "classes": out["detection_classes"][i, :k],
                }
            )
        return per_image

    # -- conversions -------------------------------------------------------------------------

    def to_detections(self, raw: dict[str, np.ndarray], width: int, height: int, threshold: float = 0.0) -> list[Detection]:
        """Detections in pixels with scores >= threshold, best first (see `to_detections`)."""
        return to_detections(raw, self.label_map, width, height, threshold)


def to_detections(raw: dict[str, np.ndarray], label_map: dict[int, str], width: int, height: int,
                  threshold: float = 0.0) -> list[Detection]:
    """Detections in pixels (xmin, ymin, xmax, ymax) with scores >= threshold, best first, from one
    image's raw outputs (`Detector.detect_bytes`); a function of plain values, so a Beam worker can
    run it away from the model.

    Classes that are not in the label map are kept under the name `id:N` (never dropped
    silently)."""
    out = []
    order = np.argsort(-raw["scores"], kind="stable")
    for i in order:
        score = float(raw["scores"][i])
        if score < threshold:
            continue
        ymin, xmin, ymax, xmax = (float(v) for v in raw["boxes"][i])
        class_id = int(raw["classes"][i])
        box = (
            min(max(xmin, 0.0), 1.0) * width,
            min(max(ymin, 0.0), 1.0) * height,
            min(max(xmax, 0.0), 1.0) * width,
            min(max(ymax, 0.0), 1.0) * height,
        )
        out.append(Detection(class_id, label_map.get(class_id, f"id:{class_id}"), score, box))
    return out


def _export_label_map(local: str, saved_model: str, shown: str) -> dict[int, str]:
    """The label map of an export: saved_model/assets/label_map.pbtxt (inside the model) and the
    label_map.pbtxt beside it, which must agree when both are there."""
    beside = os.path.join(local, "label_map.pbtxt")
    assets = os.path.join(saved_model, "assets", "label_map.pbtxt")
    inside = read_label_map(assets) if os.path.isfile(assets) else None
    if os.path.isfile(beside):
        return _agreeing(read_label_map(beside), beside, inside, assets)
    if inside is None:
        raise UserError(
            f"{shown}: no label_map.pbtxt beside saved_model/ or in saved_model/assets/; re-export with `odpipe export`"
        )
    return inside


def _agreeing(beside: dict[int, str], beside_path: str, inside: dict[int, str] | None, inside_path: str) -> dict[int, str]:
    """`beside` when it names the classes the model was exported with (`inside`, None: unknown);
    a UserError naming the first difference otherwise (a swapped label map would relabel every box)."""
    if inside is None or beside == inside:
        return beside
    ids = sorted(set(beside) | set(inside))
    first = next(i for i in ids if beside.get(i) != inside.get(i))
    raise UserError(
        f"{beside_path}: class id {first} is {beside.get(first, 'absent')!r} here but "
        f"{inside.get(first, 'absent')!r} inside the model ({inside_path}); this label map is not the model's: "
        "restore the export's own label_map.pbtxt or re-export with `odpipe export`"
    )


def _reason(err: Exception) -> str:
    """The informative line of a TensorFlow error (not "Graph execution error" boilerplate)."""
    text = getattr(err, "message", None) or str(err)
    boilerplate = ("Graph execution error", "Detected at node", "<stack traces", "[[", "Traceback")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(boilerplate)]
    return ((useful or lines or [type(err).__name__])[0])[:300]


def image_info(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, depth) of encoded image bytes from the header only (no pixel decoding),
    as stored: EXIF orientation is not applied, like tf.io.decode_image that feeds the model, so
    pixel boxes refer to the stored pixels. depth is 1 for grayscale, else 3 (what labelImg
    writes). None if the bytes are not an image."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return int(im.width), int(im.height), 1 if im.mode in ("1", "L", "I", "I;16", "F") else 3
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
