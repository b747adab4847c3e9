"""Run a .tflite through MediaPipe Tasks' ObjectDetector; print its detections as JSON.

    .venv-mediapipe/bin/python tests/mediapipe_detect.py MODEL.tflite IMAGE [IMAGE...]
    .venv-mediapipe/bin/python tests/mediapipe_detect.py --metadata MODEL.tflite

Runs in the separate MediaPipe venv (mediapipe pins absl-py~=2.3, the main stack absl-py 1.x), so
it imports nothing from odpipe. Prints {"images": [[{class, index, score, box: [xmin, ymin, xmax,
ymax] pixels}]]}; a model MediaPipe refuses is a non-zero exit with its message on stderr.
--metadata decodes the model's TFLITE_METADATA with the metadata schema's own generated code
(mediapipe.tasks.metadata.metadata_schema_py_generated) and prints it as JSON.
"""

import json
import sys

import mediapipe as mp
from mediapipe.tasks import python as mp_tasks
from mediapipe.tasks.python import vision


def main(model: str, images: list[str]) -> int:
    options = vision.ObjectDetectorOptions(
        base_options=mp_tasks.BaseOptions(model_asset_path=model),
        score_threshold=0.0, max_results=-1, running_mode=vision.RunningMode.IMAGE,
    )
    out = []
    with vision.ObjectDetector.create_from_options(options) as detector:
        for path in images:
            result = detector.detect(mp.Image.create_from_file(path))
            dets = []
            for d in result.detections:
                c = d.categories[0]
                b = d.bounding_box
                dets.append({"class": c.category_name, "index": c.index, "score": c.score,
                             "box": [b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height]})
            out.append(dets)
    json.dump({"images": out}, sys.stdout)
    return 0


def metadata_json(model: str) -> int:
    from mediapipe.tasks.metadata import metadata_schema_py_generated as md
    from mediapipe.tasks.metadata import schema_py_generated as schema

    data = bytearray(open(model, "rb").read())
    tflite = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    entry = next(m for m in tflite.metadata if m.name == b"TFLITE_METADATA")
    buf = bytes(bytearray(tflite.buffers[entry.buffer].data))
    assert md.ModelMetadata.ModelMetadataBufferHasIdentifier(buf, 0), "no M001 identifier"
    meta = md.ModelMetadataT.InitFromObj(md.ModelMetadata.GetRootAsModelMetadata(buf, 0))

    def text(v):
        return v.decode() if isinstance(v, bytes) else v

    def floats(v):
        return [] if v is None else [float(x) for x in v]

    def tensor(t):
        c = t.content
        out = {"name": text(t.name), "content_type": c.contentPropertiesType if c else None,
               "range": [c.range.min, c.range.max] if c and c.range else None,
               "files": [[text(f.name), f.type] for f in (t.associatedFiles or [])],
               "stats": [floats(t.stats.min), floats(t.stats.max)] if t.stats else None}
        if c and c.contentPropertiesType == md.ContentProperties.BoundingBoxProperties:
            p = c.contentProperties
            out["box"] = {"index": [int(i) for i in p.index], "type": p.type, "coordinate_type": p.coordinateType}
        if c and c.contentPropertiesType == md.ContentProperties.ImageProperties:
            out["color_space"] = c.contentProperties.colorSpace
        for unit in t.processUnits or []:
            if unit.optionsType == md.ProcessUnitOptions.NormalizationOptions:
                out["normalization"] = {"mean": floats(unit.options.mean), "std": floats(unit.options.std)}
        return out

    sg = meta.subgraphMetadata[0]
    json.dump({
        "name": text(meta.name), "min_parser_version": text(meta.minParserVersion),
        "inputs": [tensor(t) for t in sg.inputTensorMetadata],
        "outputs": [tensor(t) for t in sg.outputTensorMetadata],
        "output_groups": [[text(g.name), [text(n) for n in g.tensorNames]] for g in sg.outputTensorGroups or []],
    }, sys.stdout)
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "--metadata":
        sys.exit(metadata_json(sys.argv[2]))
    sys.exit(main(sys.argv[1], sys.argv[2:]))
