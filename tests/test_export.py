"""Export stage: the export directory contract, signature agreement, TFLite, checkpoint choice, errors."""

from __future__ import annotations

import glob
import json

import numpy as np
import pytest

from odpipe.errors import UserError


@pytest.fixture(scope="module")
def loaded(export_dir):
    import tensorflow as tf

    return tf.saved_model.load(str(export_dir / "saved_model"))


@pytest.fixture(scope="module")
def sample_image(sample_dir):
    """Encoded bytes and decoded uint8 array of one (non-square) sample JPEG."""
    import tensorflow as tf

    path = sorted(glob.glob(str(sample_dir / "images" / "*.jpg")))[0]
    data = open(path, "rb").read()
    array = tf.io.decode_jpeg(data, channels=3).numpy()
    assert array.shape[0] != array.shape[1]
    return data, array


def test_export_dir_contract(export_dir, model_dir, loaded):
    import tensorflow as tf

    for name in ("label_map.pbtxt", "config.yaml", "model.tflite", "export.json",
                 "saved_model/assets/label_map.pbtxt", "saved_model/assets/config.yaml"):
        assert (export_dir / name).is_file(), name
    assert (export_dir / "label_map.pbtxt").read_text() == (model_dir / "label_map.pbtxt").read_text()
    summary = json.loads((export_dir / "export.json").read_text())
    assert summary["checkpoint_choice"] == "best" and summary["step"] == 100
    sigs = loaded.signatures
    assert set(sigs) == {"serving_default", "serving_image_tensor"}
    spec = sigs["serving_default"].structured_input_signature[1]["inputs"]
    assert spec.dtype == tf.string and spec.shape.as_list() == [None]
    spec = sigs["serving_image_tensor"].structured_input_signature[1]["inputs"]
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, None, None, 3]
    for sig in sigs.values():
        assert set(sig.structured_outputs) == {"detection_boxes", "detection_scores", "detection_classes", "num_detections"}


def test_signatures_agree_and_boxes_are_normalised(loaded, sample_image, sample_dir):
    import tensorflow as tf

    data, array = sample_image
    other = open(sorted(glob.glob(str(sample_dir / "images" / "*.jpg")))[1], "rb").read()
    by_bytes = {k: v.numpy() for k, v in loaded.signatures["serving_default"](inputs=tf.constant([data, other])).items()}
    by_tensor = {k: v.numpy() for k, v in loaded.signatures["serving_image_tensor"](inputs=tf.constant(array[None])).items()}
    assert by_bytes["detection_boxes"].shape[:2] == by_bytes["detection_scores"].shape == by_bytes["detection_classes"].shape
    assert by_bytes["detection_boxes"].shape[0] == 2 and by_bytes["num_detections"].shape == (2,)
    n = int(by_tensor["num_detections"][0])
    assert n == int(by_bytes["num_detections"][0]) and n > 0  # the fixture model detects something
    for key in ("detection_boxes", "detection_scores", "detection_classes"):
        np.testing.assert_allclose(by_bytes[key][:1, :n], by_tensor[key][:, :n], atol=1e-4)
    boxes = by_bytes["detection_boxes"]
    assert boxes.min() >= 0.0 and boxes.max() <= 1.0
    valid = boxes[0, :n]
    assert np.all(valid[:, 2] >= valid[:, 0]) and np.all(valid[:, 3] >= valid[:, 1])
    classes = by_bytes["detection_classes"][0, :n]
    assert set(classes.astype(int)) <= {1, 2, 3}  # label-map ids


def test_normalize_boxes_maps_input_pixels_to_the_original_image():
    """A 200x400 (h x w) image resized to fit 128: scale 0.32. A box in model-input pixels maps
    back to original pixels (/ scale) and is then divided by the original size."""
    from odpipe.export import normalize_boxes

    info = np.array([[[200, 400], [64, 128], [0.32, 0.32], [0, 0]]], np.float32)
    boxes = np.array([[[10, 20, 50, 100], [0, 0, 64, 128], [-5, 0, 70, 140]]], np.float32)
    got = normalize_boxes(boxes, info).numpy()
    want = np.array([[[10 / 64, 20 / 128, 50 / 64, 100 / 128], [0, 0, 1, 1], [0, 0, 1, 1]]])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _match(a, b, k, iou_min, score_tol):
    """Each of a's top-k detections (odpipe.detector.Detection lists, best first) has a counterpart
    in b: same class, IoU >= iou_min, |score difference| <= score_tol. Returns the unmatched."""
    from odpipe.evaluate import iou_matrix

    missing = []
    for det in a[:k]:
        ious = iou_matrix([det.box], [d.box for d in b])[0] if b else np.zeros(0)
        if not any(d.class_id == det.class_id and ious[j] >= iou_min and abs(d.score - det.score) <= score_tol
                   for j, d in enumerate(b)):
            missing.append(det)
    return missing


def test_tflite_layout_metadata_and_summary(export_dir):
    import io
    import zipfile

    import tensorflow as tf

    from odpipe.tflite_metadata import read_label_file

    data = (export_dir / "model.tflite").read_bytes()
    interpreter = tf.lite.Interpreter(model_content=data)
    runner = interpreter.get_signature_runner("serving_default")
    spec = runner.get_input_details()["inputs"]
    assert spec["dtype"] == np.uint8 and list(spec["shape"]) == [1, 128, 128, 3]  # fixed size
    outputs = runner.get_output_details()
    order = [d["index"] for d in interpreter.get_output_details()]
    # boxes, classes, scores, count: TFLite_Detection_PostProcess's order, which on-device detectors read
    assert order == [outputs[k]["index"] for k in ("detection_boxes", "detection_classes", "detection_scores",
                                                    "num_detections")]
    assert b"TFLite_Detection_PostProcess" in data and b"M001" in data
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.read("labels.txt").decode().splitlines() == ["circle", "square", "triangle"]
    assert read_label_file(data) == {1: "circle", 2: "square", 3: "triangle"}
    lite = json.loads((export_dir / "export.json").read_text())["tflite"]
    assert lite["type"] == "float" and lite["bytes"] == len(data) and lite["calibration_images"] == 0
    assert lite["input"]["shape"] == [1, 128, 128, 3] and lite["outputs"][0] == "detection_boxes"


def test_tflite_runs_like_the_saved_model(export_dir, detector, sample_image):
    """Same image through the SavedModel and model.tflite (odpipe.detector loads either): the
    TFLite top detections are the SavedModel's (its NMS is class-agnostic, so it is compared
    TFLite -> SavedModel; the letterboxed uint8 input moves scores a little)."""
    from odpipe.detector import Detector

    data, array = sample_image
    height, width = array.shape[:2]
    ref = detector.to_detections(detector.detect_bytes([data])[0], width, height)
    with Detector(str(export_dir / "model.tflite")) as lite:
        got = lite.to_detections(lite.detect_bytes([data])[0], width, height)
        assert lite.label_map == detector.label_map
    assert len(got) > 0 and all(0 <= d.box[0] <= d.box[2] <= width and 0 <= d.box[1] <= d.box[3] <= height for d in got)
    assert not _match(got, ref, 5, 0.8, 0.005)


def test_tflite_detections_do_not_depend_on_threads(export_dir, sample_image):
    """The regression the class-agnostic NMS choice guards: TFLite's regular NMS kernel dropped a
    class on 2 threads."""
    import tensorflow as tf

    from odpipe.tflite import letterbox

    _, array = sample_image
    pixels = letterbox(tf.constant(array), 128)[0].numpy()[None]
    runs = []
    for threads in (1, 2, 3):
        interpreter = tf.lite.Interpreter(model_path=str(export_dir / "model.tflite"), num_threads=threads)
        runs.append(interpreter.get_signature_runner("serving_default")(inputs=pixels))
    for other in runs[1:]:
        for key in ("detection_classes", "detection_scores", "num_detections"):
            np.testing.assert_allclose(other[key], runs[0][key], atol=1e-5)


def test_int8_is_full_integer_and_small(int8_export_dir, export_dir):
    import tensorflow as tf
    from fixture_model import INT8_CALIBRATION_IMAGES
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    path = int8_export_dir / "model.tflite"
    model = flatbuffer_utils.read_model(str(path))
    graph = model.subgraphs[0]
    conv_codes = {schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.DEPTHWISE_CONV_2D}
    convs = [op for op in graph.operators
             if max(model.operatorCodes[op.opcodeIndex].builtinCode,
                    model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode) in conv_codes]
    assert convs and all(graph.tensors[op.outputs[0]].type == schema.TensorType.INT8 for op in convs)
    detail = tf.lite.Interpreter(model_path=str(path)).get_input_details()[0]
    assert detail["dtype"] == np.uint8 and detail["quantization"] == (1.0, 0)  # raw camera pixels
    lite = json.loads((int8_export_dir / "export.json").read_text())["tflite"]
    assert lite["type"] == "int8" and lite["calibration_images"] == INT8_CALIBRATION_IMAGES
    assert lite["calibration_records"] and all(f.endswith(".tfrecord") for f in lite["calibration_records"])
    assert lite["bytes"] < 0.5 * (export_dir / "model.tflite").stat().st_size


def test_int8_runs_close_to_the_float_saved_model(int8_export_dir, detector, sample_image):
    from odpipe.detector import Detector

    data, array = sample_image
    height, width = array.shape[:2]
    # against the float TFLite of the same model: the same in-graph NMS (class-agnostic, where the
    # SavedModel's is per class), so what differs is the quantization alone
    with Detector(str(_float_tflite(detector))) as flt:
        ref = flt.to_detections(flt.detect_bytes([data])[0], width, height)
    with Detector(str(int8_export_dir / "model.tflite")) as lite:
        got = lite.to_detections(lite.detect_bytes([data])[0], width, height)
    assert len(got) > 0
    # the fixture model's scores are low and close together; int8 moves them by a few 1/256ths
    assert len(_match(got, ref, 5, 0.6, 0.02)) <= 2


def _float_tflite(detector):
    """The float model.tflite of the fixture export (written beside its SavedModel)."""
    import pathlib

    return pathlib.Path(detector.export_dir) / "model.tflite"


def _mediapipe_python():
    import os
    import pathlib

    root = pathlib.Path(__file__).resolve().parent.parent
    python = os.environ.get("ODPIPE_MEDIAPIPE_PYTHON") or str(root / ".venv-mediapipe" / "bin" / "python")
    return python if os.path.isfile(python) else None


def test_mediapipe_object_detector_runs_int8_like_odpipe_predict(int8_export_dir, sample_dir, tmp_path):
    """MediaPipe Tasks' ObjectDetector (separate venv: mediapipe pins absl-py~=2.3, our stack 1.x)
    loads model.tflite with its metadata and finds what `odpipe predict` finds on the same image.
    The image is the model's input size (128 x 128), so neither side resizes it: MediaPipe stretches
    a non-square image where odpipe letterboxes."""
    import os
    import subprocess

    from PIL import Image

    from odpipe.predict import predict

    python = _mediapipe_python()
    if python is None:
        pytest.skip("no MediaPipe venv: `make test` creates .venv-mediapipe (or set ODPIPE_MEDIAPIPE_PYTHON)")
    source = sorted(glob.glob(str(sample_dir / "images" / "*.jpg")))[0]
    with Image.open(source) as im:
        side = min(im.size)
        im.convert("RGB").crop((0, 0, side, side)).resize((128, 128)).save(tmp_path / "square.png")
    model = str(int8_export_dir / "model.tflite")
    helper = os.path.join(os.path.dirname(__file__), "mediapipe_detect.py")
    run = subprocess.run([python, helper, model, str(tmp_path / "square.png")], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    mediapipe = json.loads(run.stdout)["images"][0]
    # the metadata, decoded by the schema's own generated code (mediapipe.tasks.metadata)
    meta = subprocess.run([python, helper, "--metadata", model], capture_output=True, text=True, timeout=120)
    assert meta.returncode == 0, meta.stderr[-2000:]
    meta = json.loads(meta.stdout)
    image = meta["inputs"][0]
    assert image["color_space"] == 1 and image["normalization"] == {"mean": [0.0], "std": [1.0]}  # RGB, raw pixels
    assert [t["name"] for t in meta["outputs"]] == ["location", "category", "score", "number of detections"]
    assert meta["outputs"][0]["box"] == {"index": [1, 0, 3, 2], "type": 1, "coordinate_type": 0}  # BOUNDARIES, RATIO
    assert meta["outputs"][1]["files"] == [["labels.txt", 3]]  # TENSOR_VALUE_LABELS
    summary = predict(model, [str(tmp_path / "square.png")], str(tmp_path / "pred"), threshold=0.0, draw=False,
                      progress=False)
    ours = json.loads((tmp_path / "pred" / "predictions.json").read_text())["predictions"][0]["detections"]
    assert summary["images"] == 1 and len(ours) > 0 and len(mediapipe) > 0
    assert abs(len(ours) - len(mediapipe)) <= 2  # MediaPipe drops only score-0 slots
    names = {d["class"] for d in mediapipe}
    assert names <= {"circle", "square", "triangle"}  # labels.txt from the metadata, no offset

    class Det:
        def __init__(self, name, score, box):
            self.class_id, self.score, self.box = name, score, box

    mp_dets = sorted((Det(d["class"], d["score"], d["box"]) for d in mediapipe), key=lambda d: -d.score)
    our_dets = [Det(d["class"], d["score"], [d["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")]) for d in ours]
    # MediaPipe's boxes are whole pixels: IoU 0.8; the same int8 kernels give the same scores
    assert not _match(our_dets, mp_dets, 10, 0.8, 0.01)


def test_tflite_type_errors(model_dir, tmp_path, capsys):
    from odpipe.cli import main
    from odpipe.tflite import quantization_of

    assert quantization_of(True) == "float" and quantization_of(False) is None and quantization_of("INT8") == "int8"
    with pytest.raises(UserError, match="int4"):
        quantization_of("int4")
    rc = main(["export", "--model-dir", str(model_dir), "-o", str(tmp_path / "out"), "--tflite", "int8",
               "--calibration-records", str(tmp_path / "none-*.tfrecord")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "none-*.tfrecord" in err and "--calibration-records" in err


def test_checkpoint_choice(model_dir, tmp_path):
    import tensorflow as tf

    from odpipe.export import resolve_export_checkpoint

    best, how = resolve_export_checkpoint(str(model_dir), "best")
    assert how == "best" and "/best/" in best
    latest, how = resolve_export_checkpoint(str(model_dir), "latest")
    assert latest == tf.train.latest_checkpoint(str(model_dir))
    assert resolve_export_checkpoint(str(model_dir), latest + ".data-00000-of-00001")[0] == latest
    with pytest.raises(UserError, match="no checkpoint"):
        resolve_export_checkpoint(str(tmp_path), "latest")


def test_cli_errors_are_one_line(tmp_path, capsys):
    from odpipe.cli import main

    rc = main(["export", "--model-dir", str(tmp_path / "nope"), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "nope" in err and "odpipe train" in err


def test_cli_export_latest(model_dir, tmp_path, capsys):
    import tensorflow as tf

    from odpipe.cli import main

    out = tmp_path / "exp"
    rc = main(["export", "--model-dir", str(model_dir), "-o", str(out), "--checkpoint", "latest"])
    assert rc == 0 and "(latest, step 100)" in capsys.readouterr().out
    summary = json.loads((out / "export.json").read_text())
    assert summary["checkpoint"] == tf.train.latest_checkpoint(str(model_dir)) and summary["tflite"] is None
    assert (out / "saved_model" / "saved_model.pb").is_file() and not (out / "model.tflite").exists()
