"""Benchmarks: training quality per minute, and the dense-box slowdown.

    python -m odpipe.bench.train_quality [--minutes 4] [--raccoon ../shared/datasets/raccoon]
                                         [--raccoon-minutes 6] [--compare-raccoon] [--skip-dense]
                                         [--skip-quality] [--json out.json]

Quality: on the generated sample data (200 images) and on real labelImg photos (the raccoon set,
200 photos), each through the real stages (CSV, 80/20 split by image, label map, Beam records),
the CPU preset trains (a) with `--time-budget MINUTES` and (b, on the sample data, and on raccoon
with --compare-raccoon) with `--steps` equal to the steps the budget chose: mAP@0.5 (pycocotools, on the held-out split) against minutes for both, and
whether the budgeted run ended inside its budget. Runs start from scratch (`--init-checkpoint none`):
this machine cannot reach the published checkpoints.

Dense boxes: the same model on 640x480 images with 2 vs 24 boxes each, training's real input
pipeline against one batch held in memory (see `odpipe.bench.train`): if the real rate falls with
the box count while the in-memory rate does not, the input pipeline (anchor labelling) is the cause.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw

from odpipe.bench import save_json
from odpipe.bench.datasets import default_raccoon, prepare
from odpipe.bench.train import run_benchmark
from odpipe.sample_data import voc_xml, write_sample_data
from odpipe.train import train


def _run(data: dict, model_dir: str, image_size: int | None = None, **kwargs) -> dict:
    t0 = time.monotonic()
    result = train(data["train"], data["eval"], data["label_map"], model_dir, init_checkpoint="none", strategy="cpu",
                   image_size=image_size,
                   echo=lambda m: print("    " + m, flush=True), **kwargs)
    return {
        "steps": result["step"],
        "minutes": (time.monotonic() - t0) / 60,
        "mAP@0.5": result["metrics"].get("AP50"),
        "mAP": result["metrics"].get("AP"),
        "best_mAP@0.5": (result["best"] or {}).get("value"),
        "evaluations": result["evaluations"],
        "steps_per_second": result["steps_per_second"],
        "time_budget": result.get("time_budget"),
    }


def quality(name: str, data: dict, minutes: float, workdir: str, compare: bool = True,
            image_size: int | None = None) -> dict:
    """A budgeted run and (with `compare`) an equal-length --steps run on the same records."""
    print(f"  {name}: --time-budget {minutes:g}", flush=True)
    budgeted = _run(data, os.path.join(workdir, f"{name}-budget"), image_size, time_budget=minutes)
    fixed = None
    if compare:
        print(f"  {name}: --steps {budgeted['steps']} (the budget's step count)", flush=True)
        fixed = _run(data, os.path.join(workdir, f"{name}-steps"), image_size, steps=budgeted["steps"])
    return {"dataset": name, "budget_minutes": minutes, "budgeted": budgeted, "steps_run": fixed,
            "within_budget": budgeted["minutes"] <= minutes * 1.10}


def _dense_dataset(outdir: str, images: int, boxes: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(outdir, "images"), exist_ok=True)
    os.makedirs(os.path.join(outdir, "annotations"), exist_ok=True)
    width, height, cols = 640, 480, 6
    cell_w, cell_h = width // cols, height // 4
    for i in range(images):
        image = Image.fromarray(rng.integers(60, 200, (height, width, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(image)
        objects = []
        for k in rng.permutation(cols * 4)[:boxes]:
            cx, cy = (k % cols) * cell_w, (k // cols) * cell_h
            w, h = int(cell_w * rng.uniform(0.5, 0.9)), int(cell_h * rng.uniform(0.5, 0.9))
            x0, y0 = cx + int(rng.integers(0, cell_w - w + 1)), cy + int(rng.integers(0, cell_h - h + 1))
            cls = ("circle", "square")[int(k) % 2]
            colour = tuple(int(c) for c in rng.integers(0, 255, 3))
            (draw.ellipse if cls == "circle" else draw.rectangle)((x0, y0, x0 + w, y0 + h), fill=colour)
            objects.append((cls, (x0, y0, x0 + w + 1, y0 + h + 1)))
        name = f"dense_{i:04d}.jpg"
        image.save(os.path.join(outdir, "images", name), quality=90)
        with open(os.path.join(outdir, "annotations", f"dense_{i:04d}.xml"), "w", encoding="utf-8") as f:
            f.write(voc_xml(name, "images", name, width, height, 3, objects))
    return outdir


def dense(workdir: str, images: int = 48, steps: int = 15) -> dict:
    """Steps/s with 2 vs 24 boxes per 640x480 image: real input pipeline and in-memory batches."""
    out = {}
    for boxes in (2, 24):
        folder = _dense_dataset(os.path.join(workdir, f"dense{boxes}"), images, boxes, seed=boxes)
        data = prepare(folder, os.path.join(workdir, f"dense{boxes}-work"), eval_fraction=0.1)
        out[boxes] = run_benchmark(data["train"], data["label_map"], steps=steps, rounds=1)
        print(f"  {boxes} boxes/image: real {out[boxes]['real_steps_per_s']:.2f} steps/s, in-memory "
              f"{out[boxes]['synthetic_steps_per_s']:.2f} steps/s", flush=True)
    few, many = out[2], out[24]
    return {
        "few_boxes": few, "many_boxes": many,
        "real_slowdown": few["real_steps_per_s"] / many["real_steps_per_s"],
        "in_memory_slowdown": few["synthetic_steps_per_s"] / many["synthetic_steps_per_s"],
    }


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(prog="python -m odpipe.bench.train_quality", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="time budget on the sample data")
    parser.add_argument("--raccoon", default=default_raccoon(), help="real labelImg photos (default ../shared/datasets/raccoon)")
    parser.add_argument("--raccoon-minutes", type=float, default=6.0)
    parser.add_argument("--compare-raccoon", action="store_true", help="also an equal-length --steps run on raccoon")
    parser.add_argument("--images", type=int, default=200, help="generated sample images")
    parser.add_argument("--image-size", type=int, help="input size for the quality runs (default: the preset's)")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-dense", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="odpipe-bench-quality-") as tmp:
        if not args.skip_dense:
            print("dense boxes:", flush=True)
            results["dense"] = d = dense(tmp)
            print(f"dense-box slowdown (2 -> 24 boxes/image): real input {d['real_slowdown']:.2f}x, "
                  f"in-memory {d['in_memory_slowdown']:.2f}x", flush=True)
        if not args.skip_quality:
            sample = os.path.join(tmp, "sample")
            write_sample_data(sample, images=args.images, seed=0)
            runs = [("sample", prepare(sample, os.path.join(tmp, "sample-work")), args.minutes, True)]
            if os.path.isdir(os.path.join(args.raccoon, "annotations")):
                runs.append(("raccoon", prepare(args.raccoon, os.path.join(tmp, "raccoon-work")), args.raccoon_minutes,
                             args.compare_raccoon))
            else:
                print(f"  no raccoon dataset at {args.raccoon}; skipped", flush=True)
            results["quality"] = []
            for name, data, minutes, compare in runs:
                q = quality(name, data, minutes, tmp, compare, args.image_size)
                results["quality"].append(q)
                b, s = q["budgeted"], q["steps_run"]
                line = (f"{name}: --time-budget {minutes:g} -> {b['steps']} steps in {b['minutes']:.2f} min "
                        f"(planned {b['time_budget']['planned_minutes']:.2f}), mAP@0.5 {b['mAP@0.5']:.3f}")
                if s:
                    line += f"; --steps {s['steps']}: {s['minutes']:.2f} min, mAP@0.5 {s['mAP@0.5']:.3f}"
                print(line, flush=True)
                for e in b["evaluations"]:
                    print(f"    {e['minutes']:.2f} min  step {e['step']}  mAP@0.5 {e['mAP@0.5']:.3f}", flush=True)
    save_json(args.json, results)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
