"""Benchmark: training steps per second of the CPU preset's variants, one run, same machine.

    python -m odpipe.bench.steps [--variants base,jit,128,192,...] [--steps 30] [--json out.json]

Each variant is the CPU preset from scratch (`--init-checkpoint none`) with one change: XLA compilation
of the train step, another input size, another backbone from Model Garden's registry. The same
compiled step runs on training's real input pipeline (generated sample data, batch 8) after 5
warm-up steps; steps/s and the ratio to the first variant are printed. Quality per minute is
`odpipe.bench.minutes`; this is the cost side.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from odpipe.bench import save_json
from odpipe.bench.train import _make_records, run_benchmark


def _backbone(model_id: str, scale: float = 1.0) -> dict:
    return {"task": {"model": {"backbone": {"type": "mobilenet", "mobilenet": {"model_id": model_id,
                                                                               "filter_size_scale": scale}}}}}


SPINENET_MOBILE = {"task": {"model": {"backbone": {"type": "spinenet_mobile", "spinenet_mobile": {
    "model_id": "49XS", "min_level": 3, "max_level": 6}}, "decoder": {"type": "identity"}}}}
MOBILEDET = {"task": {"model": {"backbone": {"type": "mobiledet", "mobiledet": {"model_id": "MobileDetCPU",
                                                                              "filter_size_scale": 0.5}}}}}

# name: (image size or None for the preset's, overrides, jit_compile)
VARIANTS: dict[str, tuple[int | None, dict | None, bool]] = {
    "base": (None, None, False),  # the CPU preset from scratch: MobileNetV4-Conv-Small x0.5 (MobileNetV2 x0.5 before)
    "jit": (None, None, True),
    "128": (128, None, False),
    "192": (192, None, False),
    "mnv2x0.5": (None, _backbone("MobileNetV2", 0.5), False),
    "mnv2x1.0": (None, _backbone("MobileNetV2", 1.0), False),
    "mnv3small": (None, _backbone("MobileNetV3Small", 1.0), False),
    "mnv3large-x0.5": (None, _backbone("MobileNetV3Large", 0.5), False),
    "mnv4conv-small": (None, _backbone("MobileNetV4ConvSmall", 1.0), False),
    "mobiledet-cpu-x0.5": (None, MOBILEDET, False),
    "spinenet-mobile-49xs": (None, SPINENET_MOBILE, False),
}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(prog="python -m odpipe.bench.steps", description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="odpipe-bench-steps-") as tmp:
        pattern, label_map = _make_records(tmp, 200)
        for name in [v for v in args.variants.split(",") if v]:
            size, overrides, jit = VARIANTS[name]
            try:
                r = run_benchmark(pattern, label_map, image_size=size, steps=args.steps, rounds=1, overrides=overrides,
                                  jit_compile=jit, synthetic=False)
            except Exception as err:  # noqa: BLE001 - a variant that does not build is reported, the rest still run
                print(f"{name:>16}: failed ({str(err).splitlines()[0][:120]})", flush=True)
                continue
            results[name] = r
            first = next(iter(results.values()))["real_steps_per_s"]
            print(f"{name:>16}: {r['image_size']} px  {r['real_steps_per_s']:.2f} steps/s  "
                  f"({r['real_steps_per_s'] / first:.2f}x the first)", flush=True)
    save_json(args.json, results)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
