"""`odpipe predict --runner DirectRunner|DataflowRunner`: batch prediction on Apache Beam.

    odpipe predict --model gs://B/home/versions/0007/export gs://B/new/2026-w49/ -o gs://B/prelabel/w49 \\
        --voc --no-draw --runner DataflowRunner --project P --region us-central1 \\
        --temp_location gs://B/tmp --sdk_container_image REGISTRY/odpipe:VERSION

The same outputs as the in-process `odpipe predict` (odpipe.predict: predictions.json,
annotations/<name>.xml with --voc, images/<name>.jpg unless --no-draw), computed by Beam's
RunInference with TensorFlow's model handler (`apache_beam.ml.inference`): `DetectorModelHandler`
is `TFModelHandlerTensor` loading the export as an odpipe `Detector` (SavedModel or model.tflite +
label map; a gs:// export is copied to the worker once per process), so pre- and post-processing are
the in-process ones: image reads and the records stage's check and repair (`_read_or_reason`, `_prepare`), the model's
own decode, pixel boxes (`detector.to_detections`), labelImg XML (`_write_outputs`). Each XML is
written atomically where it is produced; predictions.json is written once, atomically, by one
worker after every image is done, in input order. Unreadable images are listed, never a crash.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference
from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerTensor

from odpipe import storage
from odpipe.detector import to_detections
from odpipe.errors import UserError
from odpipe.predict import _prepare, _read_or_reason, _write_outputs, expand_inputs, write_predictions

# Imported inside functions: the in-process predict helpers inside the Beam DoFns (their workers import them).

NAMESPACE = "odpipe_predict"
UNREADABLE = "unreadable"


def _detect(model, batch, inference_args=None, model_id=None):
    """RunInference's inference_fn: one model call on a batch of encoded images (bytes); per image
    the raw outputs or a one-line reason, with the label map for the post-processing."""
    results = model.detect_bytes(list(batch))
    return [PredictionResult(example, {"raw": raw, "label_map": model.label_map}, model_id)
            for example, raw in zip(batch, results)]


class DetectorModelHandler(TFModelHandlerTensor):
    """TensorFlow's RunInference model handler for an odpipe export: the model is an
    odpipe.detector.Detector (Beam's loader expects a Keras model; the export is a SavedModel with
    a label map), batched by RunInference up to `batch_size` images per call."""

    def __init__(self, export: str, batch_size: int = 8):
        super().__init__(str(export), inference_fn=_detect, min_batch_size=1, max_batch_size=batch_size)

    def load_model(self):
        from odpipe.detector import Detector

        return Detector(self._model_uri)

    def get_metrics_namespace(self) -> str:
        return NAMESPACE


class _ReadFn(beam.DoFn):
    """(index, (path, name)) -> ((index, path, name, width, height, depth), bytes); an unreadable file
    or a non-image goes to the `unreadable` output as (index, {file, reason})."""

    def process(self, element):
        index, (path, name) = element
        data, reason = _read_or_reason(path)
        prepared = (None, reason.decode()) if reason else _prepare(data)  # the in-process rule (records stage's)
        if prepared[0] is None:
            beam.metrics.Metrics.counter(NAMESPACE, "images_unreadable").inc()
            yield beam.pvalue.TaggedOutput(UNREADABLE, (index, {"file": path, "reason": prepared[1]}))
            return
        data, info, note = prepared
        yield (index, path, name, *info, note), data


class _PostprocessFn(beam.DoFn):
    """(key, PredictionResult) -> (index, record, VOC boxes dropped), writing that image's XML (and
    drawing) as it goes; an image the model cannot decode goes to `unreadable`."""

    def __init__(self, output_dir: str, threshold: float, voc: bool, draw: bool):
        self.output_dir, self.threshold, self.voc, self.draw = output_dir, threshold, voc, draw

    def process(self, element):
        (index, path, name, width, height, depth, note), result = element
        raw = result.inference["raw"]
        if isinstance(raw, str):
            beam.metrics.Metrics.counter(NAMESPACE, "images_unreadable").inc()
            yield beam.pvalue.TaggedOutput(UNREADABLE, (index, {"file": path, "reason": f"the model cannot decode it: {raw}"}))
            return
        dets = to_detections(raw, result.inference["label_map"], width, height, self.threshold)
        dropped = 0
        if self.voc or self.draw:
            dropped = _write_outputs(self.output_dir, path, name, result.example, width, height, depth, dets,
                                     self.voc, self.draw)
        beam.metrics.Metrics.counter(NAMESPACE, "images_predicted").inc()
        beam.metrics.Metrics.counter(NAMESPACE, "detections").inc(len(dets))
        record = {"filename": path, "output": name, "width": width, "height": height,
                  "detections": [d.as_dict() for d in dets], **({"image": note} if note else {})}
        yield index, record, dropped


def _write_doc(results, output_dir, model, threshold, voc, images_found):
    """The single predictions.json of the run from every (kind, index, value[, dropped])."""
    records = sorted((r for r in results if r[0] == "record"), key=lambda r: r[1])
    unreadable = sorted((r for r in results if r[0] == UNREADABLE), key=lambda r: r[1])
    write_predictions(output_dir, model, threshold, voc, images_found, [r[2] for r in records],
                      [r[2] for r in unreadable], sum(r[3] for r in records))


@beam.ptransform_fn
def PredictImages(items, model: str, output_dir: str, threshold: float, voc: bool, draw: bool,  # noqa: N802
                  batch_size: int, images_found: int):
    """(index, (path, name)) -> per-image outputs, then OUTDIR/predictions.json."""
    read = items | "Read" >> beam.ParDo(_ReadFn()).with_outputs(UNREADABLE, main="images")
    handler = KeyedModelHandler(DetectorModelHandler(model, batch_size))
    post = (read.images | "RunInference" >> RunInference(handler)
            | "Postprocess" >> beam.ParDo(_PostprocessFn(output_dir, threshold, voc, draw)).with_outputs(
                UNREADABLE, main="records"))
    tagged = (
        post.records | "TagRecords" >> beam.Map(lambda r: ("record", *r)),
        post.unreadable | "TagModelUnreadable" >> beam.Map(lambda u: (UNREADABLE, *u)),
        read.unreadable | "TagReadUnreadable" >> beam.Map(lambda u: (UNREADABLE, *u)),
    )
    return (tagged | "All" >> beam.Flatten() | "ToList" >> beam.combiners.ToList()
            | "WritePredictions" >> beam.Map(_write_doc, output_dir, model, threshold, voc, images_found))


def _check_model(model: str) -> None:
    """Fail before starting a job: the export must hold a SavedModel (or be a .tflite file)."""
    if model.lower().endswith(".tflite"):
        found = storage.exists(model)
    else:
        found = any(storage.exists(storage.join(model, *p)) for p in (("saved_model", "saved_model.pb"), ("saved_model.pb",)))
    if not found:
        raise UserError(f"{model}: no saved_model/ (or model.tflite) there; point --model at the folder written by "
                        "`odpipe export -o EXPORT_DIR`")


def predict_beam(model: str, inputs, output_dir: str, threshold: float = 0.5, voc: bool = False,
                 batch_size: int = 8, draw: bool = True, runner: str = "DirectRunner",
                 beam_args: list[str] | None = None) -> dict:
    """`odpipe.predict.predict` as a Beam job on `runner`; the same outputs and summary.

    On DataflowRunner, `output_dir` and the inputs must be gs:// (the workers write there) and the
    workers need odpipe: pass --sdk_container_image with the odpipe CPU image."""
    from odpipe.records.transforms import build_pipeline_options

    model = str(model)
    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"--threshold {threshold}: must be between 0 and 1")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1")
    options = build_pipeline_options(runner, beam_args)  # bad Dataflow flags fail before anything runs
    remote = runner in ("DataflowRunner", "dataflow")
    if remote and not storage.is_remote(output_dir):
        raise UserError(f"-o {output_dir}: Dataflow workers write the outputs; use a gs:// folder")
    _check_model(model)
    items = expand_inputs(inputs)
    storage.make_writable_dir(output_dir)
    with beam.Pipeline(options=options) as pipeline:
        _ = (pipeline | "Images" >> beam.Create(list(enumerate(items)))
             | "Predict" >> PredictImages(model, output_dir, threshold, voc, draw, batch_size, len(items)))
    return _summary_from_file(output_dir)


def _summary_from_file(output_dir: str) -> dict:
    import json

    path = storage.join(output_dir, "predictions.json")
    doc = json.loads(storage.read_text(path))
    keys = ("model", "threshold", "images", "detections", "classes", "unreadable")
    return {**{k: doc[k] for k in keys}, "voc_boxes_dropped": doc.get("voc_boxes_dropped", 0), "predictions": path}
