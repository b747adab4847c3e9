"""Benchmark: training step rate on real TFRecords vs. the same model fed in-memory tensors.

    python -m odpipe.bench.train [--train 'rec/train-*.tfrecord' --label-map map.pbtxt]
                                 [--model retinanet-mobilenetv2] [--image-size 256] [--batch-size 8]
                                 [--steps 60] [--rounds 2] [--json out.json]

Without --train it writes generated sample data (--images, default 200) and converts it with
`odpipe.records.convert` in a temporary folder. The same compiled Model Garden train step runs
(a) on batches from the task's real input pipeline (TFRecord read, JPEG decode, augmentation,
anchor labelling, prefetch) and (b) on one batch taken from that pipeline and held in memory.
The ratio real/synthetic shows whether the input pipeline keeps the model busy (target >= 0.95).
The real side is training's own input: a small set (like the generated one) is read and decoded
once and kept in memory, still shuffled and augmented afresh every step ("decoded_cache" in the result).
Rounds alternate (synthetic, real, synthetic, real, ...) so drift in machine load hits both.
(`odpipe.bench.train_quality`, the next benchmark of `make bench`: dense-box slowdown and mAP per minute.)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from odpipe.annotations import xml_to_csv
from odpipe.bench import save_json
from odpipe.label_map import read_label_map, write_label_map
from odpipe.records import convert
from odpipe.sample_data import write_sample_data
from odpipe.train import build_config, select_runtime

# TensorFlow, Model Garden and odpipe.modeling.detection (which imports both) are imported inside the
# functions: seconds of start-up, after --help has been answered.


def _make_records(workdir: str, images: int) -> tuple[str, str]:
    write_sample_data(workdir, images=images, seed=0)
    csv = os.path.join(workdir, "labels.csv")
    xml_to_csv(os.path.join(workdir, "annotations"), csv, images_dir=os.path.join(workdir, "images"))
    label_map = os.path.join(workdir, "label_map.pbtxt")
    write_label_map(csv, label_map)
    prefix = os.path.join(workdir, "train")
    convert(csv, os.path.join(workdir, "images"), label_map, prefix, shards=2)
    return prefix + "-*.tfrecord", label_map


def run_benchmark(train_pattern: str, label_map_path: str, model: str = "retinanet-mobilenetv2",
                  image_size: int | None = None, batch_size: int | None = None, steps: int = 60,
                  warmup: int = 5, rounds: int = 2, overrides: dict | None = None, jit_compile: bool = False,
                  synthetic: bool = True) -> dict:
    """{"real_steps_per_s", "synthetic_steps_per_s", "ratio", ...} measured on this machine."""
    import tensorflow as tf
    from official.modeling import performance

    from odpipe.modeling.detection import _cacheable_training_files, build_task

    runtime = select_runtime("auto", None, len(tf.config.list_physical_devices("GPU")))
    config = build_config(train_pattern, train_pattern, read_label_map(label_map_path), model, image_size,
                          batch_size, steps=10_000, init_checkpoint="none", config_overrides=overrides, runtime=runtime)
    performance.set_mixed_precision_policy(getattr(tf, config.runtime.mixed_precision_dtype))
    task = build_task(config.task)
    task.jit_compile = jit_compile
    model_ = task.build_model()
    optimizer = task.create_optimizer(config.trainer.optimizer_config, config.runtime)
    metrics = task.build_metrics(training=True)
    decoded_cache = _cacheable_training_files(task, config.task.train_data, None) is not None
    dataset = task.build_inputs(config.task.train_data)
    iterator = iter(dataset)

    @tf.function
    def step(inputs):
        return task.train_step(inputs, model_, optimizer, metrics=metrics)["total_loss"]

    fixed = next(iterator)  # one real batch, held in memory for the synthetic feed
    for _ in range(warmup):  # compile + warm both paths
        if synthetic:
            step(fixed).numpy()
        step(next(iterator)).numpy()

    def timed(feed) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            loss = step(feed())
        loss.numpy()
        return steps / (time.perf_counter() - start)

    real, in_memory = [], []
    for _ in range(rounds):
        if synthetic:
            in_memory.append(timed(lambda: fixed))
        real.append(timed(lambda: next(iterator)))
    return _summary(model, config, runtime, decoded_cache, steps, rounds, real, in_memory)


def _summary(model, config, runtime, decoded_cache, steps, rounds, real, in_memory) -> dict:
    real_rate = sum(real) / len(real)
    synthetic_rate = sum(in_memory) / len(in_memory) if in_memory else float("nan")
    batch = config.task.train_data.global_batch_size
    return {
        "model": model,
        "image_size": config.task.model.input_size[0],
        "batch_size": batch,
        "precision": config.runtime.mixed_precision_dtype,
        "device": "GPU" if runtime["num_gpus"] else "CPU",
        "decoded_cache": decoded_cache,
        "steps_per_round": steps,
        "rounds": rounds,
        "real_steps_per_s": real_rate,
        "synthetic_steps_per_s": synthetic_rate,
        "real_images_per_s": real_rate * batch,
        "synthetic_images_per_s": synthetic_rate * batch,
        "ratio": real_rate / synthetic_rate,
        "target": 0.95,
        "rounds_real": real,
        "rounds_synthetic": in_memory,
    }


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(prog="python -m odpipe.bench.train", description=__doc__.splitlines()[0])
    parser.add_argument("--train", help="train TFRecords glob (default: generated sample data)")
    parser.add_argument("--label-map", help="label map for --train")
    parser.add_argument("--images", type=int, default=200, help="sample images to generate without --train")
    parser.add_argument("--model", default="retinanet-mobilenetv2")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per round and feed")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    if bool(args.train) != bool(args.label_map):
        parser.error("--train and --label-map go together")
    with tempfile.TemporaryDirectory(prefix="odpipe-bench-train-") as tmp:
        pattern, label_map = (args.train, args.label_map) if args.train else _make_records(tmp, args.images)
        result = run_benchmark(pattern, label_map, args.model, args.image_size, args.batch_size, args.steps,
                               rounds=args.rounds)
    print(
        f"{result['model']} {result['image_size']}px batch {result['batch_size']} {result['precision']} on "
        f"{result['device']}: real records{' (decoded cache)' if result['decoded_cache'] else ''} "
        f"{result['real_steps_per_s']:.2f} steps/s "
        f"({result['real_images_per_s']:.1f} images/s), in-memory {result['synthetic_steps_per_s']:.2f} steps/s "
        f"({result['synthetic_images_per_s']:.1f} images/s); ratio {result['ratio']:.3f} (target >= 0.95)"
    )
    save_json(args.json, result)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
