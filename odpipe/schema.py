"""The contracts between odpipe's stages, in one place: the labels CSV, the record, the record files.

- **Labels CSV** (`odpipe csv` writes it; split, labelmap, tfrecord and inspect read it):
  `CSV_COLUMNS`, one row per object (an image without objects: one row with an empty class and
  empty box), boxes in pixels of the stored image.
- **Record**: one `tf.train.Example` per image with the keys of the TF Object Detection API /
  Model Garden's `TfExampleDecoder` (`FEATURES`). `encode_example` is the one writer,
  `parse_example` the one reader (tfrecord, inspect, evaluate; train reads through Model Garden's
  decoder, which uses the same keys).
- **Record files**: `PREFIX-SSSSS-of-NNNNN.tfrecord` shards and `PREFIX.summary.json`, written
  last; the summary is the manifest of the complete shard set (`odpipe.records.shard_files`
  resolves a pattern through it).

The `tf.train.Example` message is built here from TensorFlow's own `feature.proto`/`example.proto`
definition in a private protobuf descriptor pool, so that the writer (and `odpipe tfrecord`'s
start-up) needs no TensorFlow import: `import tensorflow` alone costs ~2-3 s, the whole start-up
budget of the records stage. The messages are protobuf's own (upb) messages, so serialization is
protobuf's; `tests/test_schema.py` pins the bytes against `tf.train.Example`.
"""

from __future__ import annotations

import csv
import functools
import io
import re

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from odpipe import storage
from odpipe.errors import UserError, first_line

# ----------------------------------------------------------------------------- the labels CSV

CSV_COLUMNS = ["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax", "difficult", "truncated"]
CSV_REQUIRED = CSV_COLUMNS[:8]  # difficult/truncated default to 0 when absent
CSV_BOX = ["xmin", "ymin", "xmax", "ymax"]



def read_labels(path: str) -> dict[str, list]:
    """Read a labels CSV (local or `gs://`): {column: values} for every column of CSV_COLUMNS, typed
    (see `iter_labels`). The one reader of the CSV: `odpipe.annotations.read_labels_csv` wraps it in
    a DataFrame; the records stage streams `iter_labels` (no pandas: ~1 s of imports)."""
    columns: dict[str, list] = {name: [] for name in CSV_COLUMNS}
    for row in iter_labels(path):
        for name, value in zip(CSV_COLUMNS, row):
            columns[name].append(value)
    return columns


def iter_labels(path: str):
    """The rows of a labels CSV (local or `gs://`) as tuples of CSV_COLUMNS values, typed.

    Class names are kept as text exactly ("NA", "null" and "None" are real class names); an empty
    class means an image without objects. Box values are floats (NaN on object-less rows);
    width/height ints; difficult/truncated ints (0 when absent or empty). Bad input is a UserError
    naming the line.
    """
    try:
        with storage.open_read(path) as f:
            text = f.read().decode("utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{path}: CSV not found; check the path") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not a readable CSV ({first_line(err)}); write it with `odpipe csv`") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next((row for row in reader if row), None)
        if header is None:
            raise UserError(f"{path}: CSV is empty; write it with `odpipe csv`")
        missing = [c for c in CSV_REQUIRED if c not in header]
        if missing:
            raise UserError(f"{path}: CSV lacks column(s) {', '.join(missing)}; expected {','.join(CSV_COLUMNS)} "
                            "(write it with `odpipe csv`)")
        index = [header.index(name) if name in header else None for name in CSV_COLUMNS]
        nan = float("nan")
        for row in reader:
            if not row:
                continue
            line = reader.line_num
            if len(row) > len(header):
                raise UserError(f"{path}: not a readable CSV (expected {len(header)} fields in line {line}, saw "
                                f"{len(row)}); write it with `odpipe csv`")
            name, width, height, cls, x0, y0, x1, y1, difficult, truncated = (
                row[i] if i is not None and i < len(row) else "" for i in index)
            try:
                box = tuple(float(v) if v.strip() else nan for v in (x0, y0, x1, y1))
                typed = (name, int(float(width)), int(float(height)), cls, *box,
                         int(float(difficult)) if difficult.strip() else 0,
                         int(float(truncated)) if truncated.strip() else 0)
            except (ValueError, OverflowError) as err:
                raise UserError(f"{path}: a numeric column holds text (line {line}: {first_line(err)}); "
                                "fix or regenerate the CSV") from None
            if (cls != "") != all(v == v for v in box):
                raise UserError(f"{path}: line {line} ({name}) has a class without a box or a box without a class; "
                                "fix that row")
            yield typed
    except csv.Error as err:
        raise UserError(f"{path}: not a readable CSV ({first_line(err)}); write it with `odpipe csv`") from None


# ----------------------------------------------------------------------------- the record

ENCODED = "image/encoded"
FORMAT = "image/format"
HEIGHT = "image/height"
WIDTH = "image/width"
FILENAME = "image/filename"
SOURCE_ID = "image/source_id"
SHA256 = "image/key/sha256"
XMIN, YMIN, XMAX, YMAX = (f"image/object/bbox/{k}" for k in ("xmin", "ymin", "xmax", "ymax"))
CLASS_TEXT = "image/object/class/text"
CLASS_LABEL = "image/object/class/label"
AREA = "image/object/area"
IS_CROWD = "image/object/is_crowd"
DIFFICULT = "image/object/difficult"
TRUNCATED = "image/object/truncated"

# key -> value kind, every key always present (images without objects have empty object lists)
FEATURES: dict[str, str] = {
    ENCODED: "bytes", FORMAT: "bytes", HEIGHT: "int64", WIDTH: "int64", FILENAME: "bytes", SOURCE_ID: "bytes",
    SHA256: "bytes", XMIN: "float", YMIN: "float", XMAX: "float", YMAX: "float", CLASS_TEXT: "bytes",
    CLASS_LABEL: "int64", AREA: "float", IS_CROWD: "int64", DIFFICULT: "int64", TRUNCATED: "int64",
}
OBJECT_KEYS = tuple(k for k in FEATURES if k.startswith("image/object/"))
IMAGE_FORMATS = ("jpeg", "png")  # image/format: the real format of image/encoded

# parse_example's field names for each key
_FIELDS = {
    ENCODED: "encoded", FORMAT: "format", HEIGHT: "height", WIDTH: "width", FILENAME: "filename",
    SOURCE_ID: "source_id", SHA256: "sha256", XMIN: "xmin", YMIN: "ymin", XMAX: "xmax", YMAX: "ymax",
    CLASS_TEXT: "classes", CLASS_LABEL: "labels", AREA: "area", IS_CROWD: "is_crowd", DIFFICULT: "difficult",
    TRUNCATED: "truncated",
}
_SINGLE = {ENCODED: b"", FORMAT: "", HEIGHT: -1, WIDTH: -1, FILENAME: "", SOURCE_ID: "", SHA256: ""}


@functools.lru_cache(maxsize=1)
def example_class():
    """The `tf.train.Example` message class (same fields, numbers and options as TensorFlow's)."""
    F = descriptor_pb2.FieldDescriptorProto  # noqa: N806
    proto = descriptor_pb2.FileDescriptorProto(name="odpipe/tensorflow_example.proto", package="tensorflow",
                                               syntax="proto3")

    def message(name, *fields, **options):
        msg = proto.message_type.add(name=name, **options)
        for number, (field_name, kind, type_name, packed) in enumerate(fields, 1):
            label = F.LABEL_REPEATED if packed is not None else F.LABEL_OPTIONAL
            field = msg.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name
            if packed:
                field.options.packed = True
        return msg

    message("BytesList", ("value", F.TYPE_BYTES, None, False))
    message("FloatList", ("value", F.TYPE_FLOAT, None, True))
    message("Int64List", ("value", F.TYPE_INT64, None, True))
    feature = message("Feature", ("bytes_list", F.TYPE_MESSAGE, ".tensorflow.BytesList", None),
                      ("float_list", F.TYPE_MESSAGE, ".tensorflow.FloatList", None),
                      ("int64_list", F.TYPE_MESSAGE, ".tensorflow.Int64List", None))
    feature.oneof_decl.add(name="kind")
    for field in feature.field:
        field.oneof_index = 0
    features = message("Features", ("feature", F.TYPE_MESSAGE, ".tensorflow.Features.FeatureEntry", False))
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL, type_name=".tensorflow.Feature")
    message("Example", ("features", F.TYPE_MESSAGE, ".tensorflow.Features", None))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


def encode_example(values: dict[str, list]) -> bytes:
    """Serialized `tf.train.Example` from {key: [values]} for every key of `FEATURES` (bytes values
    as bytes, text as str); deterministic (keys sorted), as `tf.train.Example.SerializeToString(
    deterministic=True)`."""
    example = example_class()()
    feature = example.features.feature
    for key, kind in FEATURES.items():
        vals = values[key]
        if kind == "bytes":
            feature[key].bytes_list.value.extend([v.encode("utf-8") if isinstance(v, str) else v for v in vals])
        elif kind == "float":
            feature[key].float_list.value.extend(vals)
        else:
            feature[key].int64_list.value.extend(vals)
    return example.SerializeToString(deterministic=True)


def parse_example(serialized: bytes, where: str = "record") -> dict:
    """One record as plain Python values: {field: value} with the field names of `_FIELDS` (single
    values for the image keys, lists for the object keys; text decoded) and "keys" (sorted).

    A payload that is not a `tf.train.Example`, or lacks image/encoded, is a UserError naming `where`.
    """
    try:
        feats = example_class().FromString(serialized).features.feature
    except (DecodeError, RuntimeError) as err:
        raise UserError(f"{where}: a record is not a tf.train.Example ({first_line(err, 80)}); "
                        "rewrite the records with `odpipe tfrecord`") from None
    if ENCODED not in feats or not feats[ENCODED].bytes_list.value:
        raise UserError(f"{where}: a record has no {ENCODED}; rewrite the records with `odpipe tfrecord`")
    out: dict = {"keys": sorted(feats.keys())}
    for key, field in _FIELDS.items():
        kind = FEATURES[key]
        values = list(getattr(feats[key], f"{kind}_list").value) if key in feats else []
        if kind == "bytes" and key != ENCODED:
            values = [v.decode("utf-8", "replace") for v in values]
        out[field] = (values[0] if values else _SINGLE[key]) if key in _SINGLE else values
    return out


# ----------------------------------------------------------------------------- the record files

SHARD_SUFFIX = ".tfrecord"
SUMMARY_SUFFIX = ".summary.json"
SHARD_NAME = re.compile(r"-(\d{5})-of-(\d{5})" + re.escape(SHARD_SUFFIX) + "$")


EXPORT_COMPLETION = "export.json"  # an export folder's summary, written last: without it, the export is not complete


def shard_path(prefix: str, shard: int, num_shards: int) -> str:
    """PREFIX-SSSSS-of-NNNNN.tfrecord"""
    return f"{prefix}-{shard:05d}-of-{num_shards:05d}{SHARD_SUFFIX}"


def shard_pattern(prefix: str) -> str:
    """The glob of a prefix's shards, as users and the pipeline pass it: PREFIX-*.tfrecord"""
    return f"{prefix}-*{SHARD_SUFFIX}"


def summary_path(prefix: str) -> str:
    """PREFIX.summary.json: written last; the manifest of the complete shard set."""
    return f"{prefix}{SUMMARY_SUFFIX}"


def prefix_of(pattern: str) -> str | None:
    """The prefix of `PREFIX-*.tfrecord`, `PREFIX-*-of-*.tfrecord` or of one shard's path; else None."""
    for tail in (f"-*-of-*{SHARD_SUFFIX}", f"-*{SHARD_SUFFIX}"):
        if pattern.endswith(tail):
            return pattern[: -len(tail)]
    match = SHARD_NAME.search(pattern)
    return pattern[: match.start()] if match else None
