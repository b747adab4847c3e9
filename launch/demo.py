"""`python -m launch.demo OUTDIR` (what `make demo` runs): the whole pipeline, locally, end to end.

1. writes the synthetic labelImg dataset (`odpipe.sample_data`) to OUTDIR/data/;
2. runs the compiled training pipeline with the kfp local runner (`odpipe run`'s code path):
   annotations -> CSV -> split -> label map -> TFRecords (Beam) -> train (CPU preset) -> export
   -> COCO evaluation -> gated publish to the model home OUTDIR/models/; outputs under OUTDIR/work/
   (run it again: the data is unchanged, so it says so in seconds and publishes nothing);
3. prints the mAP and the path of report.html.

The defaults (200 images, 2400 steps of the CPU preset) are sized to finish well under 15 minutes
on 2 CPU cores; `--steps`, `--images`, `--image-size` and `--batch-size` override them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from odpipe.errors import UserError

DEMO_IMAGES = 200
# mAP@0.5 0.994, mAP 0.818 on the sample data, 5.0 min in all on 2 quiet cores (one run, 2026-12-07); 800 steps
# gave 0.753 / 0.504 since the scratch preset's steps became faster (MobileNetV4 x0.5, 192 px)
DEMO_STEPS = 2400
DEMO_SEED = 0


def _num(value) -> str:
    """A metric as printed: 3 decimals, "n/a" when undefined (null: no labelled eval object) or missing."""
    return "n/a" if value is None else f"{value:.3f}"


def demo(
    outdir: str,
    images: int = DEMO_IMAGES,
    steps: int | None = DEMO_STEPS,
    image_size: int | None = None,
    batch_size: int | None = None,
    tflite: str = "none",
    seed: int = DEMO_SEED,
    echo=print,
) -> dict:
    """Generate the sample data in OUTDIR/data and run the whole pipeline locally in OUTDIR/work."""
    from launch.local import print_result, run_locally
    from odpipe.sample_data import write_sample_data

    start = time.monotonic()
    outdir = os.path.abspath(outdir)
    data = os.path.join(outdir, "data")
    if not os.path.isdir(os.path.join(data, "annotations")):
        echo(f"odpipe demo: writing {images} sample images to {data}")
        write_sample_data(data, images=images, seed=seed)
    else:
        echo(f"odpipe demo: reusing the sample data in {data}")
    params: dict = {
        "annotations": os.path.join(data, "annotations"),
        "images": os.path.join(data, "images"),
        "model_home": os.path.join(outdir, "models"),
        "init_checkpoint": "none",  # this machine may be offline: the pretrained default needs bucket access
        "model": "retinanet-mobilenetv2",
        "tflite": tflite,
    }
    for name, value in (("steps", steps), ("image_size", image_size), ("batch_size", batch_size)):
        if value:
            params[name] = value
    summary = run_locally(params, os.path.join(outdir, "work"), echo=echo)
    print_result(summary, echo=echo)
    minutes = (time.monotonic() - start) / 60
    metrics = summary.get("metrics") or {}
    echo("")
    summary["minutes"] = minutes
    if (summary.get("plan") or {}).get("changed") is False:
        echo(f"odpipe demo finished in {minutes:.1f} min: nothing to retrain; the model in service is listed by "
             f"`odpipe models list {params['model_home']}`")
        return summary
    echo(f"odpipe demo finished in {minutes:.1f} min: mAP {_num(metrics.get('mAP'))}, "
         f"mAP@0.5 {_num(metrics.get('mAP@0.5'))}")
    echo(f"report.html: {summary.get('report')}")
    echo(f"data_report.html: {summary.get('data_report')}")
    summary["minutes"] = minutes
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launch.demo", description=__doc__.splitlines()[0])
    parser.add_argument("outdir", nargs="?", default="demo-output", help="output folder (default demo-output)")
    parser.add_argument("--images", type=int, default=DEMO_IMAGES, help=f"sample images (default {DEMO_IMAGES})")
    parser.add_argument("--steps", type=int, default=DEMO_STEPS, help=f"training steps (default {DEMO_STEPS})")
    parser.add_argument("--image-size", type=int, default=None, help="input size (default: the CPU preset's)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default: the CPU preset's)")
    parser.add_argument("--tflite", default="none", choices=("none", "float", "fp16", "int8"),
                        help="also export model.tflite of this type (adds a few minutes; default none)")
    parser.add_argument("--seed", type=int, default=DEMO_SEED, help="sample data seed")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        demo(args.outdir, args.images, args.steps, args.image_size, args.batch_size, args.tflite, args.seed)
    except UserError as err:
        print(f"odpipe demo: error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
