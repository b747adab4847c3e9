"""TFLite model metadata for an on-device object detector, written per the TFLite metadata schema.

The layout is what the TFLite Task Library and MediaPipe Tasks' `ObjectDetector` read for a model
with in-graph post-processing (`TFLite_Detection_PostProcess`), the same as
`mediapipe.tasks.python.metadata.metadata_writers.object_detector.MetadataWriter
.create_for_models_with_nms` writes:

* one input "image": ImageProperties (RGB), NormalizationOptions (mean/std per channel), stats
  0..255 for a uint8 tensor;
* four outputs, in the model's output order: "location" (BoundingBoxProperties index [1, 0, 3, 2],
  BOUNDARIES, RATIO: ymin, xmin, ymax, xmax normalised), "category" (with the label file
  `labels.txt`, TENSOR_VALUE_LABELS: line i names class index i), "score", "number of detections";
  the first three grouped as "detection_result".

The metadata flatbuffer (file identifier "M001") goes into the model's `metadata` list under the
name "TFLITE_METADATA" and the associated label file is appended to the model file as a zip
archive (a .tflite with metadata is also a valid zip). Schema: mediapipe/tasks/metadata/
metadata_schema.fbs (= tflite-support's); slot numbers below follow its field order (a union field
takes two slots: its type, then its value).
"""

from __future__ import annotations

import io
import zipfile

import flatbuffers
import numpy as np

# TensorFlow's TFLite schema is imported inside `populate` (it loads TensorFlow: seconds of start-up).

METADATA_NAME = "TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.2.1"  # the oldest parser that reads tensor groups
LABEL_FILE = "labels.txt"
OUTPUT_NAMES = ("location", "category", "score", "number of detections")

# enum / union values from metadata_schema.fbs
_FEATURE_PROPERTIES, _IMAGE_PROPERTIES, _BOUNDING_BOX_PROPERTIES = 1, 2, 3
_NORMALIZATION_OPTIONS = 1
_RGB = 1
_BOUNDARIES = 1
_TENSOR_VALUE_LABELS = 3


def _strings(b, values):
    offsets = [b.CreateString(v) for v in values]
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _offsets(b, offsets):
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _floats(b, values):
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependFloat32(float(v))
    return b.EndVector()


def _uints(b, values):
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependUint32(int(v))
    return b.EndVector()


def _table(b, fields):
    """fields: [(slot, kind, value)] with kind in offset/int8/uint8/uint32/int32; value already built."""
    b.StartObject(max([slot for slot, _, _ in fields], default=-1) + 1)
    for slot, kind, value in fields:
        if kind == "offset":
            b.PrependUOffsetTRelativeSlot(slot, value, 0)
        elif kind == "int8":
            b.PrependInt8Slot(slot, value, 0)
        elif kind == "uint8":
            b.PrependUint8Slot(slot, value, 0)
        elif kind == "uint32":
            b.PrependUint32Slot(slot, value, 0)
        elif kind == "int32":
            b.PrependInt32Slot(slot, value, 0)
        else:  # pragma: no cover - programming error
            raise ValueError(kind)
    return b.EndObject()


def _associated_file(b, name, description, file_type):
    # AssociatedFile: name 0, description 1, type 2, locale 3, version 4
    n, d = b.CreateString(name), b.CreateString(description)
    return _table(b, [(0, "offset", n), (1, "offset", d), (2, "int8", file_type)])


def _tensor(b, name, description, content_type, content_props, value_range=None, process_units=None,
            stats=None, files=None):
    # TensorMetadata: name 0, description 1, dimension_names 2, content 3, process_units 4, stats 5,
    # associated_files 6. Content: content_properties_type 0, content_properties 1, range 2.
    n, d = b.CreateString(name), b.CreateString(description)
    range_off = None
    if value_range is not None:
        range_off = _table(b, [(0, "int32", value_range[0]), (1, "int32", value_range[1])])  # ValueRange min, max
    content_fields = [(0, "uint8", content_type), (1, "offset", content_props)]
    if range_off is not None:
        content_fields.append((2, "offset", range_off))
    content = _table(b, content_fields)
    units = _offsets(b, process_units) if process_units else None
    if stats is not None:  # Stats: max 0, min 1
        mx, mn = _floats(b, stats[1]), _floats(b, stats[0])
        stats_off = _table(b, [(0, "offset", mx), (1, "offset", mn)])
    else:
        stats_off = _table(b, [])
    files_off = _offsets(b, files) if files else None
    fields = [(0, "offset", n), (1, "offset", d), (3, "offset", content), (5, "offset", stats_off)]
    if units is not None:
        fields.append((4, "offset", units))
    if files_off is not None:
        fields.append((6, "offset", files_off))
    return _table(b, fields)


def _input_tensor(b, norm_mean: list[float], norm_std: list[float], input_uint8: bool) -> int:
    """The "image" TensorMetadata: RGB, its normalisation, the value range of its pixels."""
    image_props = _table(b, [(0, "int8", _RGB)])  # ImageProperties: color_space 0, default_size 1
    mean, std = _floats(b, norm_mean), _floats(b, norm_std)
    norm = _table(b, [(0, "offset", mean), (1, "offset", std)])  # NormalizationOptions: mean 0, std 1
    unit = _table(b, [(0, "uint8", _NORMALIZATION_OPTIONS), (1, "offset", norm)])  # ProcessUnit: options (union)
    if input_uint8:
        stats = ([0.0], [255.0])
    else:
        stats = ([(0.0 - m) / s for m, s in zip(norm_mean, norm_std)],
                 [(255.0 - m) / s for m, s in zip(norm_mean, norm_std)])
    return _tensor(b, "image", "Input image to be detected.", _IMAGE_PROPERTIES, image_props,
                   process_units=[unit], stats=stats)


def _output_tensor(b, role: str) -> int:
    """The TensorMetadata of one output (a role of OUTPUT_NAMES); "category" carries the label file."""
    if role == "location":
        index = _uints(b, [1, 0, 3, 2])
        props = _table(b, [(0, "offset", index), (1, "int8", _BOUNDARIES)])  # RATIO (0) is the default
        return _tensor(b, "location", "The locations of the detected boxes.",
                       _BOUNDING_BOX_PROPERTIES, props, value_range=(2, 2))
    if role == "category":
        labels = _associated_file(b, LABEL_FILE, "Labels for categories that the model can recognize.",
                                  _TENSOR_VALUE_LABELS)
        return _tensor(b, "category", "The categories of the detected boxes.", _FEATURE_PROPERTIES,
                       _table(b, []), value_range=(2, 2), files=[labels])
    if role == "score":
        return _tensor(b, "score", "The scores of the detected boxes.", _FEATURE_PROPERTIES,
                       _table(b, []), value_range=(2, 2))
    return _tensor(b, "number of detections", "The number of the detected boxes.", _FEATURE_PROPERTIES, _table(b, []))


def _subgraph(b, image: int, outputs: list[int]) -> int:
    """The SubGraphMetadata: the input, the outputs in the model's order, the "detection_result" group."""
    inputs = _offsets(b, [image])
    outputs_off = _offsets(b, outputs)
    group_name = b.CreateString("detection_result")
    group_tensors = _strings(b, ["location", "category", "score"])
    group = _table(b, [(0, "offset", group_name), (1, "offset", group_tensors)])  # TensorGroup: name 0, tensor_names 1
    groups = _offsets(b, [group])
    sg_name = b.CreateString("ObjectDetector")
    # SubGraphMetadata: name 0, description 1, input_tensor_metadata 2, output_tensor_metadata 3,
    # associated_files 4, input_process_units 5, output_process_units 6, input_tensor_groups 7,
    # output_tensor_groups 8
    return _table(b, [(0, "offset", sg_name), (2, "offset", inputs), (3, "offset", outputs_off), (8, "offset", groups)])


def build_metadata(
    *,
    name: str,
    description: str,
    version: str,
    author: str,
    license_text: str,
    norm_mean: list[float],
    norm_std: list[float],
    input_uint8: bool,
    output_roles: list[str],
) -> bytes:
    """The ModelMetadata flatbuffer. `output_roles`: for each model output in order, one of
    OUTPUT_NAMES (so the metadata lines up with the model's outputs whatever their order)."""
    if sorted(output_roles) != sorted(OUTPUT_NAMES):
        raise ValueError(f"output roles {output_roles} are not {OUTPUT_NAMES}")
    b = flatbuffers.Builder(1024)
    image = _input_tensor(b, norm_mean, norm_std, input_uint8)
    made = {role: _output_tensor(b, role) for role in output_roles}
    subgraphs = _offsets(b, [_subgraph(b, image, [made[r] for r in output_roles])])
    # ModelMetadata: name 0, description 1, version 2, subgraph_metadata 3, author 4, license 5,
    # associated_files 6, min_parser_version 7
    strings = [b.CreateString(s) for s in (name, description, version)]
    author_off, license_off = b.CreateString(author), b.CreateString(license_text)
    parser = b.CreateString(MIN_PARSER_VERSION)
    root = _table(b, [
        (0, "offset", strings[0]), (1, "offset", strings[1]), (2, "offset", strings[2]), (3, "offset", subgraphs),
        (4, "offset", author_off), (5, "offset", license_off), (7, "offset", parser),
    ])
    b.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


def label_file_text(label_map: dict[int, str], num_classes: int) -> str:
    """labels.txt for the category output: line i names TFLite class index i = label-map id i + 1
    (TFLite_Detection_PostProcess skips the background column 0). Ids missing from the label map
    are `???`, the placeholder the Task Library and MediaPipe skip."""
    return "".join(f"{label_map.get(i + 1, '???')}\n" for i in range(num_classes - 1))


def read_label_file(model_bytes: bytes) -> dict[int, str] | None:
    """{label-map id: name} from the labels.txt packed in a .tflite, or None if there is none."""
    try:
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as zf:
            text = zf.read(LABEL_FILE).decode("utf-8")
    except (zipfile.BadZipFile, KeyError):
        return None
    return {i + 1: name for i, name in enumerate(text.splitlines()) if name and name != "???"}


def populate(model_bytes: bytes, metadata: bytes, label_text: str, outputs: list[int] | None = None) -> bytes:
    """The model with `metadata` in its metadata list (as buffer + Metadata entry) and the label
    file appended as a zip archive; with `outputs` (tensor indices), its subgraph's outputs are put
    in that order (signatures name tensors by index, so they stay valid)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    if outputs is not None:
        if sorted(outputs) != sorted(int(i) for i in model.subgraphs[0].outputs):
            raise ValueError(f"outputs {outputs} are not a permutation of the model's {list(model.subgraphs[0].outputs)}")
        model.subgraphs[0].outputs = np.asarray(outputs, dtype=np.int32)
    buffer = schema.BufferT()
    buffer.data = list(metadata)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME] + [entry]
    data = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    out = io.BytesIO()
    out.write(data)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(LABEL_FILE, label_text)
    return out.getvalue()
