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


def test_tflite_matches_saved_model(export_dir, loaded, sample_image):
    import tensorflow as tf

    _, array = sample_image
    interpreter = tf.lite.Interpreter(model_path=str(export_dir / "model.tflite"))
    runner = interpreter.get_signature_runner("serving_default")
    lite = runner(inputs=array[None])
    ref = {k: v.numpy() for k, v in loaded.signatures["serving_image_tensor"](inputs=tf.constant(array[None])).items()}
    n = int(ref["num_detections"][0])
    assert int(lite["num_detections"][0]) == n and n > 0
    np.testing.assert_allclose(lite["detection_scores"][0, :n], ref["detection_scores"][0, :n], atol=2e-3)
    # Same detections. Ties at the cut-off (equal scores) may be resolved differently, so compare
    # those scoring clearly above the lowest kept score.
    kept = int(np.sum(ref["detection_scores"][0, :n] > ref["detection_scores"][0, n - 1] + 2e-3))
    assert kept > 0
    unused = list(range(n))
    for i in range(kept):
        for j in unused:
            if (lite["detection_classes"][0, j] == ref["detection_classes"][0, i]
                    and abs(lite["detection_scores"][0, j] - ref["detection_scores"][0, i]) < 2e-3
                    and np.allclose(lite["detection_boxes"][0, j], ref["detection_boxes"][0, i], atol=2e-3)):
                unused.remove(j)
                break
        else:
            pytest.fail(f"SavedModel detection {i} has no TFLite counterpart")


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
