"""Library noise stays off the console: a short train, an export with a TFLite model and a predict on
it, through the CLI in subprocesses as a user runs them (TF_CPP_MIN_LOG_LEVEL not set)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOISE = (
    "Gradients do not exist",  # tf_keras' optimizer, on each train-function trace
    "did not match any model input",  # tf_keras UserWarning
    "UserWarning",
    "tf.lite.Interpreter is deprecated",
    "cuInit",
    "absl::InitializeLog",
    "Ignored output_format",
    "MLIR V1 optimization pass",
    "XNNPACK delegate",
)


def _odpipe(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-m", "odpipe", *args], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_train_export_predict_print_no_library_noise(records, label_map_path, sample_dir, tmp_path):
    model, export = tmp_path / "model", tmp_path / "export"
    output = _odpipe("train", "--train", records["train"], "--eval", records["eval"], "--label-map", str(label_map_path),
                     "--model-dir", str(model), "--steps", "2", "--image-size", "128", "--batch-size", "2",
                     "--init-checkpoint", "none", "--strategy", "cpu")
    output += _odpipe("export", "--model-dir", str(model), "-o", str(export), "--tflite")
    image = sorted((sample_dir / "images").glob("*.jpg"))[0]
    output += _odpipe("predict", "--model", str(export / "model.tflite"), str(image), "-o", str(tmp_path / "p"))
    found = [line for line in output.splitlines() if any(n in line for n in NOISE)]
    assert not found, found
    assert "trained to step 2" in output and "wrote" in output and "predicted 1 images" in output


def test_native_noise_filter_keeps_other_lines(capfd):
    """Only the exact native messages are dropped from fd 2; any other line written there stays."""
    from odpipe.quiet import native_noise_filtered

    with native_noise_filtered():
        os.write(2, b"W0000 00:00:1796618774.371827   21223 tf_tfl_flatbuffer_helpers.cc:364] Ignored output_format.\n")
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"E0000 real converter error\n")
    err = capfd.readouterr().err
    assert err == "E0000 real converter error\n"


def test_python_filters_are_set_on_import():
    import logging

    import odpipe  # noqa: F401 - the filters are set when odpipe is imported

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    try:
        logger.warning("Gradients do not exist for variables %s when minimizing the loss.", ["v:0"])
        logger.warning("a real warning")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == "a real warning\n"
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        from odpipe.quiet import quiet_libraries

        quiet_libraries()
        warnings.warn("Input dict contained keys ['6'] which did not match any model input.", UserWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else"]
