"""TFRecord files: framing (writer) and reading.

Framing: each record is `uint64 length, uint32 masked_crc32c(length), data, uint32
masked_crc32c(data)` (little endian; TensorFlow's `core/lib/io/record_writer.cc`). The writer
frames records itself with the public `google_crc32c` library (C) rather than through
`tf.io.TFRecordWriter`, because `import tensorflow` alone (2-3 s warm on 2 cores, measured) is
more than the records stage's whole start-up budget (1.5 s), and the workers need TensorFlow for
nothing else; `tests/test_tfrecord.py` pins the bytes against `tf.io.TFRecordWriter` and reads
every record back with `tf.data.TFRecordDataset` and Model Garden's decoder. Readers use
TensorFlow's own reader (`read_records`).
"""

from __future__ import annotations

import struct

import google_crc32c

from odpipe import storage
from odpipe.errors import UserError, first_line

_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(record: bytes) -> tuple[bytes, bytes]:
    """(header, footer) around `record` in a TFRecord file (the record itself is not copied)."""
    length = struct.pack("<Q", len(record))
    return length + struct.pack("<I", masked_crc32c(length)), struct.pack("<I", masked_crc32c(record))


class RecordWriter:
    """Append records to an open binary file object."""

    def __init__(self, fileobj):
        self._f = fileobj

    def write(self, record: bytes) -> None:
        header, footer = frame(record)
        self._f.write(header)
        self._f.write(record)
        self._f.write(footer)


def read_records(path: str):
    """Yield the serialized records of one TFRecord file (local or `gs://`) with TensorFlow's reader,
    framing CRCs checked; a corrupt or truncated file is a UserError. A `gs://` file is copied to a
    local temporary file first (TensorFlow's gs:// support ignores the storage emulator and Beam's
    credentials; odpipe.storage does not)."""
    import os
    import shutil
    import tempfile

    import tensorflow as tf

    local, tmp = path, None
    if storage.is_remote(path):
        fd, tmp = tempfile.mkstemp(suffix=".tfrecord")
        with os.fdopen(fd, "wb") as out, storage.open_read(path) as src:
            shutil.copyfileobj(src, out, 1 << 22)
        local = tmp
    try:
        for record in tf.data.TFRecordDataset(local).as_numpy_iterator():
            yield bytes(record)
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError) as err:
        raise UserError(f"{path}: corrupt TFRecord file ({first_line(err, 100)}); rewrite it with `odpipe tfrecord`") from None
    except tf.errors.OpError as err:
        raise UserError(f"{path}: cannot read ({first_line(err, 100)}); check the path") from None
    finally:
        if tmp:
            os.remove(tmp)
