"""Library noise that tells an odpipe user nothing, silenced where it is made (before TensorFlow is
imported: `odpipe/__init__.py` calls `quiet_libraries()`, so the CLI, the components and the tests
all get it):

* TensorFlow's C++ log below FATAL (`TF_CPP_MIN_LOG_LEVEL=3`, unless the variable is already set):
  e.g. "failed call to cuInit" on a machine without a GPU, which is not an error there;
* `WARNING:tensorflow:Gradients do not exist for variables [...]` (tf_keras' optimizer, on every
  train-function trace): the MobileNetV2 backbone's last block feeds no output level RetinaNet uses;
* tf_keras' "Input dict contained keys [...] which did not match any model input" (the backbone
  returns a level the decoder does not read), and TensorFlow's `tf.lite.Interpreter` deprecation
  warning (odpipe pins TensorFlow's interpreter; the LiteRT one is not a dependency).

Everything else (real warnings and errors) still shows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings

TF_LOG_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
_DROPPED_LOG_MESSAGES = ("Gradients do not exist for variables",)
_IGNORED_WARNINGS = (
    r"Input dict contained keys .* which did not match any model input",
    r"\s*Warning: tf\.lite\.Interpreter is deprecated",
)
tf_level_defaulted = False  # True when quiet_libraries() chose TF_CPP_MIN_LOG_LEVEL (the user did not)


class _DropMessages(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not any(text in message for text in _DROPPED_LOG_MESSAGES)


def quiet_libraries() -> None:
    """Set the filters above; idempotent. Must run before TensorFlow is imported for the C++ level."""
    global tf_level_defaulted
    if TF_LOG_VARIABLE not in os.environ:
        os.environ[TF_LOG_VARIABLE] = "3"
        tf_level_defaulted = True
    for pattern in _IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=UserWarning)
    logger = logging.getLogger("tensorflow")  # the logger TensorFlow's tf_logging writes through
    if not any(isinstance(f, _DropMessages) for f in logger.filters):
        logger.addFilter(_DropMessages())


# Lines native (C++) code writes straight to file descriptor 2, which no Python filter reaches: the
# TFLite converter's absl log (before absl::InitializeLog, every level goes to stderr) and the TFLite
# interpreter's delegate notice. Only these exact messages are dropped.
NATIVE_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[WI]\d{4} [\d:. ]+\d+ \S+\.cc:\d+\] (Ignored output_format|Ignored drop_control_dependency"
    r"|MLIR V1 optimization pass is not enabled)"
    r"|fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, output_inference_type: \w+"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU)\.?\s*$"
)


@contextlib.contextmanager
def native_noise_filtered():
    """Inside: what native code writes to stderr (fd 2) is held in a temporary file, then written
    back without the NATIVE_NOISE lines (everything else, errors included, still shows)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode("utf-8", "replace").splitlines(True)
                    if not NATIVE_NOISE.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
