"""Predict throughput: the full `odpipe predict` path vs. the model alone (target ratio >= 0.9).

    python -m odpipe.bench.predict [--model EXPORT_DIR] [--images 200] [--batch-size 8]

* model only: the `serving_default` signature called on batches of encoded images already in
  memory as tf.string tensors (the model's own decode + preprocessing + network + NMS: the work
  predict cannot avoid);
* predict: `odpipe.predict.predict` on a folder of the same images: folder walk, file reads,
  header parsing, batching, model, pixel boxes, predictions.json; with and without drawing the
  output images (drawing shares the CPU with the model on a CPU-only machine).

Without --model it builds one first: sample data -> CSV -> records -> 2 training steps of the CPU
preset -> export (an untrained model runs exactly as fast as a trained one).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

from odpipe.annotations import xml_to_csv
from odpipe.detector import Detector
from odpipe.export import export_model
from odpipe.label_map import write_label_map
from odpipe.predict import predict
from odpipe.records import convert
from odpipe.sample_data import write_sample_data
from odpipe.train import train

# TensorFlow is imported inside the functions (start-up time: seconds), after --help has been answered.


def _build_model(work: str) -> str:
    data = os.path.join(work, "train_data")
    write_sample_data(data, images=16, seed=1)
    csv = os.path.join(work, "labels.csv")
    xml_to_csv(os.path.join(data, "annotations"), csv, images_dir=os.path.join(data, "images"))
    label_map = os.path.join(work, "label_map.pbtxt")
    write_label_map(csv, label_map)
    prefix = os.path.join(work, "records", "all")
    convert(csv, os.path.join(data, "images"), label_map, prefix, shards=1)
    pattern = prefix + "-*.tfrecord"
    train(pattern, pattern, label_map, os.path.join(work, "model"), steps=2, init_checkpoint="none")
    export_dir = os.path.join(work, "export")
    export_model(os.path.join(work, "model"), export_dir, checkpoint="latest")
    return export_dir


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m odpipe.bench.predict", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="export folder (default: build a small one first)")
    parser.add_argument("--images", type=int, default=200, help="images to predict (default 200)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size for both paths (default 8)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each path; the best counts (default 2)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = tempfile.mkdtemp(prefix="odpipe-bench-predict-")
    try:
        t0 = time.perf_counter()
        export_dir = args.model or _build_model(work)
        if not args.model:
            print(f"built a model to time in {time.perf_counter() - t0:.0f}s: {export_dir}", flush=True)
        figures = _measure(export_dir, work, args.images, args.batch_size, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _print(figures)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    return 0


def _measure(export_dir: str, work: str, images: int, bs: int, repeats: int) -> dict:
    """Images/s of the model alone and of `odpipe predict` (without and with drawing) on sample images."""
    import tensorflow as tf

    images_dir = os.path.join(work, "inputs")
    write_sample_data(images_dir, images=images, seed=7)
    folder = os.path.join(images_dir, "images")
    names = sorted(os.listdir(folder))
    encoded = [open(os.path.join(folder, n), "rb").read() for n in names]
    batches = [tf.constant(encoded[i : i + bs]) for i in range(0, len(encoded), bs)]
    detector = Detector(export_dir)
    detector.run_bytes(batches[0])  # warm-up: trace and load
    if len(batches) > 1 and batches[-1].shape[0] != bs:
        detector.run_bytes(batches[-1])

    def model_only():
        for batch in batches:
            detector.run_bytes(batch)

    def full(draw):
        out = os.path.join(work, "out")
        shutil.rmtree(out, ignore_errors=True)
        summary = predict(detector, [folder], out, threshold=0.5, batch_size=bs, draw=draw, progress=False)
        assert summary["images"] == len(names), summary

    n = len(names)
    model_s = _best(model_only, repeats)
    plain_s = _best(lambda: full(False), repeats)
    drawn_s = _best(lambda: full(True), repeats)
    figures = {
        "device": "GPU" if tf.config.list_physical_devices("GPU") else f"CPU ({os.cpu_count()} cores)",
        "images": n,
        "batch_size": bs,
        "model_only_images_per_s": round(n / model_s, 2),
        "predict_images_per_s": round(n / plain_s, 2),
        "predict_drawn_images_per_s": round(n / drawn_s, 2),
        "ratio": round(model_s / plain_s, 3),
        "ratio_with_drawing": round(model_s / drawn_s, 3),
        "target": 0.9,
    }
    detector.close()
    return figures


def _print(figures: dict) -> None:
    print(f"predict benchmark on {figures['device']}, {figures['images']} images (192-320 px JPEG), "
          f"batch {figures['batch_size']}:")
    print(f"  model only (in-memory encoded batches): {figures['model_only_images_per_s']:8.2f} images/s")
    print(f"  odpipe predict, --no-draw:               {figures['predict_images_per_s']:8.2f} images/s"
          f"  ratio {figures['ratio']:.3f} (target >= 0.9)")
    print(f"  odpipe predict, drawn images:           {figures['predict_drawn_images_per_s']:8.2f} images/s"
          f"  ratio {figures['ratio_with_drawing']:.3f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.exit(main())
