"""The files TensorFlow must read or write itself: a model dir (checkpoints, config.yaml,
odpipe.json beside them), the records tf.data reads, a TFLite file written beside a SavedModel.

These go through TensorFlow's own filesystem (`tf.io.gfile`: its `gs://` is the one the trainer's
checkpoints, tf.data and the SavedModel loader use), so what odpipe checks is what TensorFlow will
see; errors are TensorFlow's (`tf.errors.OpError`), which callers turn into one-line errors. All
other paths go through `odpipe.storage` (Beam's Cloud Storage client). This module is the only
place in odpipe that calls `tf.io.gfile`.

TensorFlow is imported inside the functions: importing it takes seconds, and `odpipe.storage`
is imported by every command, most of which never touch it.
"""

from __future__ import annotations

from typing import IO


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def exists(path: str) -> bool:
    return _gfile().exists(str(path))


def is_dir(path: str) -> bool:
    return _gfile().isdir(str(path))


def glob(pattern: str) -> list[str]:
    """Files matching `pattern` (TensorFlow's glob rules), in TensorFlow's order."""
    return _gfile().glob(str(pattern))


def size(path: str) -> int:
    """Size in bytes of a file (TensorFlow's stat)."""
    return _gfile().stat(str(path)).length


def makedirs(path: str) -> None:
    _gfile().makedirs(str(path))


def remove(path: str) -> None:
    _gfile().remove(str(path))


def open_file(path: str, mode: str = "r") -> IO:
    """A `tf.io.gfile.GFile` (text for "r"/"w", bytes for "rb"/"wb")."""
    return _gfile().GFile(str(path), mode)


def read_text(path: str) -> str:
    with open_file(path) as f:
        return f.read()


def write_text(path: str, text: str) -> None:
    with open_file(path, "w") as f:
        f.write(text)


def write_bytes(path: str, data: bytes) -> None:
    with open_file(path, "wb") as f:
        f.write(data)


def latest_checkpoint(folder: str) -> str | None:
    """The prefix of the newest checkpoint in `folder` (its `checkpoint` file), or None."""
    import tensorflow as tf

    return tf.train.latest_checkpoint(str(folder))
