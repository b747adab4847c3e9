"""Trained model / export fixtures (owned by the train stage).

model_dir: a few real Model Garden training steps (RetinaNet-MobileNetV2 preset at 128 px) on the
`records` fixture, with one evaluation, so best/ exists. export_dir: its export with a float TFLite.
int8_export_dir: its export with a full-integer int8 TFLite calibrated on a few training images.
"""

from __future__ import annotations

import pytest

# Small but real: enough steps for the loss to fall and scores to separate. Scores stay low, so the
# model keeps detections down to 0.001 (Model Garden's default cut is 0.05): downstream tests see boxes.
FIXTURE_TRAIN = dict(
    image_size=128, batch_size=4, steps=100, eval_interval=100, steps_per_loop=10, learning_rate=0.08, strategy="cpu",
    init_checkpoint="none",  # offline: the preset's pretrained default cannot be reached here
    config_overrides={"task": {"model": {"detection_generator": {"pre_nms_score_threshold": 0.001}}},
                      # 5 steps of warmup, as when the seed below was chosen (the preset warms up over 20 from scratch)
                      "trainer": {"optimizer_config": {"warmup": {"linear": {"warmup_steps": 5}}}}},
)


@pytest.fixture(scope="session")
def trained(records, label_map_path, tmp_path_factory):
    """(model_dir, train() result) of the fixture run."""
    import tensorflow as tf

    from odpipe.train import train

    tf.keras.utils.set_random_seed(1)  # one fixture model on every run: the int8 tests compare its low, close scores

    out = tmp_path_factory.mktemp("model")
    result = train(records["train"], records["eval"], str(label_map_path), str(out), echo=lambda _m: None, **FIXTURE_TRAIN)
    return out, result


@pytest.fixture(scope="session")
def model_dir(trained):
    return trained[0]


@pytest.fixture(scope="session")
def export_dir(model_dir, tmp_path_factory):
    from odpipe.export import export_model

    out = tmp_path_factory.mktemp("export")
    export_model(str(model_dir), str(out), checkpoint="best", tflite=True)
    return out


INT8_CALIBRATION_IMAGES = 8  # a handful: calibration is real, just short


@pytest.fixture(scope="session")
def int8_export_dir(model_dir, records, tmp_path_factory):
    from odpipe.export import export_model

    out = tmp_path_factory.mktemp("export-int8")
    export_model(str(model_dir), str(out), checkpoint="best", tflite="int8",
                 calibration_records=records["train"], calibration_images=INT8_CALIBRATION_IMAGES)
    return out


@pytest.fixture(scope="session")
def detector(export_dir):
    """The real export, loaded once for every in-process evaluate/predict run."""
    from odpipe.detector import Detector

    with Detector(str(export_dir)) as loaded:
        yield loaded
