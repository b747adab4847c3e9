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

import logging
import os
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
