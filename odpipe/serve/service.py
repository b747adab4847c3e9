"""The model side of `odpipe serve`, free of HTTP: parse a prediction request, run the detector.

A request body (Vertex AI custom container and KServe V1 protocol alike):

    {"instances": [{"b64": "<base64 JPEG/PNG/...>"}, {"image_bytes": {"b64": "..."}, "key": "k"}],
     "parameters": {"threshold": 0.3}}

gives {"predictions": [{"width", "height", "detections": [{class, id, score, box: {xmin, ymin,
xmax, ymax}}]}, ...]}, one per instance in order (an instance's "key" is echoed back): the same
records as `odpipe predict` writes to predictions.json, from the same `Detector` and conversion.
Every problem with a request is a `PayloadError` with one line naming the instance and the fix;
the HTTP layer answers it with 400.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import threading
import time

from odpipe.errors import first_line

# Imported inside functions: TensorFlow (through odpipe.detector) and Pillow only when the model loads.

THRESHOLD_KEY = "threshold"
MAX_PIXELS = 40_000_000  # per image: a 40 MP photo decodes to 120 MB; a batch of them must fit in memory
INSTANCE_KEYS = ("b64", "image_bytes", "key")


class PayloadError(ValueError):
    """A bad request: one line for the client (HTTP 400)."""


class NotReady(RuntimeError):
    """The model is still loading (HTTP 503)."""


def _instance_bytes(i: int, instance) -> bytes:
    """The encoded image of `instances[i]`: {"b64": ...} or {"image_bytes": {"b64": ...}}."""
    where = f"instances[{i}]"
    if not isinstance(instance, dict):
        raise PayloadError(f'{where}: expected an object {{"b64": "<base64 image>"}}, got {type(instance).__name__}')
    unknown = sorted(set(instance) - set(INSTANCE_KEYS))
    if unknown:
        raise PayloadError(f"{where}: unknown field(s) {', '.join(unknown)}; an instance has "
                           '"b64" (or "image_bytes": {"b64": ...}) and an optional "key"')
    text = instance.get("b64")
    if text is None and isinstance(instance.get("image_bytes"), dict):
        text, where = instance["image_bytes"].get("b64"), f"{where}.image_bytes"
    if not isinstance(text, str):
        raise PayloadError(f'{where}: needs "b64": the image file\'s bytes as a base64 string')
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise PayloadError(f"{where}.b64: not valid base64; encode the image file's bytes "
                           "(e.g. `base64 -w0 photo.jpg`)") from None
    if not data:
        raise PayloadError(f"{where}.b64: empty; send the image file's bytes")
    return data


def _threshold(parameters, default: float) -> float:
    if parameters is None:
        return default
    if not isinstance(parameters, dict):
        raise PayloadError(f"parameters: expected an object such as {{\"{THRESHOLD_KEY}\": 0.5}}")
    unknown = sorted(set(parameters) - {THRESHOLD_KEY})
    if unknown:
        raise PayloadError(f"parameters: unknown field(s) {', '.join(unknown)}; known: {THRESHOLD_KEY}")
    value = parameters.get(THRESHOLD_KEY, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise PayloadError(f"parameters.{THRESHOLD_KEY}: {json.dumps(value)} is not a number between 0 and 1")
    return float(value)


def parse_request(body: bytes, max_instances: int, default_threshold: float) -> tuple[list[bytes], list, float]:
    """(encoded images, their keys or None, score threshold) of a request body, else PayloadError."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PayloadError(f"the body is not JSON ({first_line(err)}); send "
                           '{"instances": [{"b64": "<base64 image>"}, ...]}') from None
    if not isinstance(doc, dict) or "instances" not in doc:
        raise PayloadError('the body has no "instances"; send {"instances": [{"b64": "<base64 image>"}, ...]}')
    unknown = sorted(set(doc) - {"instances", "parameters"})
    if unknown:
        raise PayloadError(f"unknown field(s) {', '.join(unknown)}; a request has \"instances\" and \"parameters\"")
    instances = doc["instances"]
    if not isinstance(instances, list) or not instances:
        raise PayloadError('"instances" must be a non-empty list of {"b64": "<base64 image>"}')
    if len(instances) > max_instances:
        raise PayloadError(f"{len(instances)} instances: at most {max_instances} per request; split the request")
    threshold = _threshold(doc.get("parameters"), default_threshold)
    images = [_instance_bytes(i, instance) for i, instance in enumerate(instances)]
    keys = [instance.get("key") for instance in instances]
    return images, keys, threshold


def warmup_image() -> bytes:
    """A small JPEG to run once before the server reports ready (builds the model's kernels)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 90, 60)).save(buf, format="JPEG")
    return buf.getvalue()


class Service:
    """The detector behind the server: `load()` (blocking, once), then `predict(body)`.

    `model` is an export folder (local or gs://), a model.tflite, or an already loaded
    odpipe.detector.Detector. Model calls are serialised: TensorFlow already spreads one call
    over every core, and one batch at a time keeps memory bounded by --max-instances."""

    def __init__(self, model, name: str = "odpipe", threshold: float = 0.5, max_instances: int = 32,
                 max_pixels: int = MAX_PIXELS):
        self.model = model
        self.max_pixels = max_pixels
        self.name = name
        self.threshold = threshold
        self.max_instances = max_instances
        self.detector = None
        self.error: str | None = None
        self.ready = threading.Event()
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the model and run one warm-up batch; `ready` is set only after both."""
        from odpipe.detector import Detector

        start = time.perf_counter()
        self.detector = self.model if isinstance(self.model, Detector) else Detector(str(self.model))
        result = self.detector.detect_bytes([warmup_image()])[0]
        if isinstance(result, str):
            raise RuntimeError(f"the warm-up image failed: {result}")
        self.ready.set()
        print(f"odpipe serve: model {self.name} ready ({len(self.detector.label_map)} classes, "
              f"loaded and warmed up in {time.perf_counter() - start:.1f}s)", flush=True)

    def close(self) -> None:
        if self.detector is not None and self.detector is not self.model:
            self.detector.close()

    def predict(self, body: bytes) -> dict:
        """{"predictions": [...]} for a request body; PayloadError for a bad one, NotReady before load."""
        from odpipe.detector import image_info

        if not self.ready.is_set():
            raise NotReady(self.error or f"model {self.name} is loading; retry when the readiness route answers 200")
        images, keys, threshold = parse_request(body, self.max_instances, self.threshold)
        infos = [image_info(data) for data in images]
        for i, info in enumerate(infos):
            if info is None:
                raise PayloadError(f"instances[{i}]: not an image (unknown format or corrupt header); "
                                   "send a JPEG, PNG, BMP, GIF, WebP or TIFF file")
            if info[0] * info[1] > self.max_pixels:
                raise PayloadError(f"instances[{i}]: {info[0]}x{info[1]} pixels is over the server's limit of "
                                   f"{self.max_pixels} per image; send it scaled down")
        with self._lock:
            results = self.detector.detect_bytes(images)
        predictions = []
        for i, (raw, (width, height, _depth), key) in enumerate(zip(results, infos, keys)):
            if isinstance(raw, str):
                raise PayloadError(f"instances[{i}]: the model cannot decode the image ({raw}); send a whole, "
                                   "readable image file")
            dets = self.detector.to_detections(raw, width, height, threshold)
            record = {"width": width, "height": height, "detections": [d.as_dict() for d in dets]}
            if key is not None:
                record["key"] = key
            predictions.append(record)
        return {"predictions": predictions}
