"""TFLite accuracy and size: the float SavedModel vs model.tflite in float, fp16 and int8.

    python -m odpipe.bench.tflite [--model-dir DIR --data EVAL_GLOB --calibration-records TRAIN_GLOB]
        [--images 200] [--steps 500] [--calibration-images 300] [--json out.json]

Without --model-dir it builds one: `odpipe sample-data` images -> CSV -> split (25 % eval) ->
records -> the CPU preset trained --steps steps. Then it exports the SavedModel and each TFLite
type, runs every model through `odpipe evaluate` on the same eval records, and prints mAP,
mAP@0.5, file size and single-image latency (ms per image through odpipe.detector on this CPU,
decode and letterbox included), with each TFLite figure as a ratio or difference to the SavedModel.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

from odpipe import storage
from odpipe.annotations import xml_to_csv
from odpipe.detector import Detector
from odpipe.evaluate import evaluate
from odpipe.export import export_model
from odpipe.inspect_records import read_record_file
from odpipe.label_map import write_label_map
from odpipe.records import convert
from odpipe.sample_data import write_sample_data
from odpipe.split import split_csv
from odpipe.train import train

# TensorFlow is imported inside `_latency_images` (start-up time: seconds), after --help has been answered.

TYPES = ("float", "fp16", "int8")


def _build(work: str, images: int, steps: int) -> tuple[str, str, str]:
    data = os.path.join(work, "sample")
    write_sample_data(data, images=images, seed=0)
    csv = os.path.join(work, "labels.csv")
    xml_to_csv(os.path.join(data, "annotations"), csv, images_dir=os.path.join(data, "images"))
    split_csv(csv, os.path.join(work, "split"), eval_fraction=0.25, seed=0)
    label_map = os.path.join(work, "label_map.pbtxt")
    write_label_map(csv, label_map)
    patterns = {}
    for side in ("train", "eval"):
        prefix = os.path.join(work, "records", side)
        convert(os.path.join(work, "split", f"{side}.csv"), os.path.join(data, "images"), label_map, prefix, shards=2)
        patterns[side] = prefix + "-*.tfrecord"
    model_dir = os.path.join(work, "model")
    start = time.perf_counter()
    train(patterns["train"], patterns["eval"], label_map, model_dir, steps=steps, eval_interval=steps,
          echo=lambda _m: None)
    print(f"trained {steps} steps in {time.perf_counter() - start:.0f}s", flush=True)
    return model_dir, patterns["eval"], patterns["train"]


def _latency_ms(model: str, images: list[bytes]) -> float:
    with Detector(model) as detector:
        detector.detect_bytes(images[:1])  # warm-up
        start = time.perf_counter()
        for data in images:
            detector.detect_bytes([data])
        return 1000.0 * (time.perf_counter() - start) / len(images)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m odpipe.bench.tflite", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="model dir of `odpipe train` (default: train one on sample data)")
    parser.add_argument("--data", help="eval TFRecords (with --model-dir)")
    parser.add_argument("--calibration-records", help="int8 calibration TFRecords (default: the model's train records)")
    parser.add_argument("--images", type=int, default=200, help="sample images to generate (default 200)")
    parser.add_argument("--steps", type=int, default=500, help="training steps of the built model (default 500)")
    parser.add_argument("--calibration-images", type=int, default=300)
    parser.add_argument("--latency-images", type=int, default=20, help="images timed one by one (default 20)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = tempfile.mkdtemp(prefix="odpipe-bench-tflite-")
    try:
        if args.model_dir:
            if not args.data:
                parser.error("--data is needed with --model-dir")
            model_dir, data, calibration = args.model_dir, args.data, args.calibration_records
        else:
            model_dir, data, calibration = _build(work, args.images, args.steps)
        models = _export_all(model_dir, work, calibration, args.calibration_images)
        encoded = _latency_images(data, args.latency_images)
        rows = {}
        for name, (path, summary) in models.items():
            metrics = evaluate(path, data, os.path.join(work, f"report-{name}"), progress=False, report_images=0)
            size = (summary["bytes"] if summary else
                    sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(path, "saved_model"))
                        for f in fs))
            rows[name] = {"mAP": metrics["mAP"], "mAP@0.5": metrics["mAP@0.5"], "bytes": size,
                          "ms_per_image": _latency_ms(path, encoded), "images": metrics["images"]}
        _print(rows)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _export_all(model_dir: str, work: str, calibration: str | None, calibration_images: int) -> dict:
    """{"saved_model" | TFLite type: (path, TFLite summary or None)}: the SavedModel and each TFLite type."""
    start = time.perf_counter()
    base = export_model(model_dir, os.path.join(work, "export"), checkpoint="latest")
    print(f"exported the SavedModel in {time.perf_counter() - start:.0f}s", flush=True)
    models = {"saved_model": (base["export_dir"], None)}
    for kind in TYPES:
        out = os.path.join(work, f"export-{kind}")
        start = time.perf_counter()
        summary = export_model(model_dir, out, checkpoint="latest", tflite=kind, calibration_records=calibration,
                               calibration_images=calibration_images)["tflite"]
        print(f"exported {kind} in {time.perf_counter() - start:.0f}s "
              f"(calibration images: {summary['calibration_images']})", flush=True)
        models[kind] = (summary["path"], summary)
    return models


def _latency_images(data: str, count: int) -> list[bytes]:
    """The encoded images of the first `count` eval records."""
    import tensorflow as tf

    sample = [r for f in sorted(storage.glob(data)) for r in read_record_file(f)][:count]
    return [tf.train.Example.FromString(r).features.feature["image/encoded"].bytes_list.value[0] for r in sample]


def _print(rows: dict) -> None:
    ref = rows["saved_model"]
    print(f"\n{'model':<12} {'mAP':>7} {'mAP@0.5':>8} {'d mAP@0.5':>10} {'MB':>7} {'size/fp32':>9} {'ms/img':>7}")
    for name, row in rows.items():
        d50 = row["mAP@0.5"] - ref["mAP@0.5"]
        ratio = row["bytes"] / rows["float"]["bytes"] if name != "saved_model" else float("nan")
        print(f"{name:<12} {row['mAP']:7.4f} {row['mAP@0.5']:8.4f} {d50:+10.4f} {row['bytes'] / 1e6:7.2f} "
              f"{ratio:9.2f} {row['ms_per_image']:7.1f}")
    print(f"(eval images: {ref['images']}; SavedModel size = saved_model/ folder)")


if __name__ == "__main__":
    sys.exit(main())
