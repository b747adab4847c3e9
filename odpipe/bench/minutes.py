"""Benchmark: detector quality per CPU-minute, the CPU preset before and after, as users run it.

    python -m odpipe.bench.minutes [--datasets sample,raccoon,crowded] [--minutes 10]
                                   [--curve raccoon:5,20] [--before v0.2.0] [--versions before,after]
                                   [--flags 'NAME=--mosaic 0'] [--repeats N] [--workdir DIR]
                                   [--json out.json]

Each run is the command a user types, `odpipe train ... --time-budget MINUTES --init-checkpoint
none --strategy cpu`, in a subprocess: "after" with this checkout, "before" with the code of the
git ref `--before` (checked out in a temporary worktree; same virtual environment, same records).
From scratch, since this machine cannot reach the published checkpoints. Datasets: see
`odpipe.bench.datasets`. Reported per run: steps, minutes used of the budget (train() to the final
checkpoint, the figure the budget governs, and the whole process), and mAP@0.5 of the final model
on the held-out split (pycocotools). One run each by default: on a shared machine compare rows of one
invocation. From scratch, runs of one recipe differ (random initialisation and data order: on the
crowded set at 5 minutes, mAP@0.5 from 0.45 to 0.84); `--repeats N` runs each N times, interleaved,
and ends with each recipe's median and range.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from odpipe.bench import datasets, save_json

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@contextlib.contextmanager
def checkout(ref: str | None):
    """A folder holding odpipe at git `ref` (a temporary worktree), or this checkout for None."""
    if ref is None:
        yield ROOT
        return
    folder = tempfile.mkdtemp(prefix="odpipe-before-")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", folder, ref], check=True, capture_output=True)
    try:
        yield folder
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", folder], check=False, capture_output=True)


def train_run(code: str, data: dict, model_dir: str, minutes: float, extra: list[str] = ()) -> dict:
    """`odpipe train --time-budget MINUTES` from scratch with the odpipe in folder `code`."""
    cmd = [sys.executable, "-m", "odpipe", "train", "--train", data["train"], "--eval", data["eval"],
           "--label-map", data["label_map"], "--model-dir", model_dir, "--time-budget", f"{minutes:g}",
           "--init-checkpoint", "none", "--strategy", "cpu", *extra]
    env = dict(os.environ, PYTHONPATH=code, TF_CPP_MIN_LOG_LEVEL="2")
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True)
    wall = (time.monotonic() - t0) / 60
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    for line in lines:
        if "time budget" in line or "input size" in line or "eval at" in line or "re-plan" in line:
            print("      " + line.strip(), flush=True)
    if proc.returncode:
        print("\n".join(lines[-20:]), flush=True)
        return {"error": lines[-1] if lines else f"exit {proc.returncode}", "process_minutes": wall}
    with open(os.path.join(model_dir, "train_result.json")) as f:
        result = json.load(f)
    budget = result.get("time_budget") or {}
    metrics = result.get("metrics") or {}
    return {
        "steps": result.get("step"),
        "minutes": budget.get("actual_minutes"),
        "process_minutes": wall,
        "planned_steps": budget.get("total_steps"),
        "mAP@0.5": metrics.get("AP50"),
        "mAP": metrics.get("AP"),
        "steps_per_second": result.get("steps_per_second"),
        "image_size": result.get("image_size"),
        "evaluations": result.get("evaluations"),
        "finish_seconds": result.get("finish_seconds"),  # the run's end (save, flush), inside the budget
    }


def _plan(names: list[str], minutes: float, curve: str | None) -> list[tuple[str, float]]:
    runs = [(name, minutes) for name in names]
    if curve:
        name, _, values = curve.partition(":")
        runs += [(name, float(m)) for m in values.split(",") if m and float(m) != minutes and name in names]
    return runs


def _row(name: str, minutes: float, version: str, r: dict) -> str:
    if "error" in r:
        return f"| {name} | {minutes:g} | {version} | failed: {r['error'][:80]} | | | | | |"
    used = 100 * (r["minutes"] or 0) / minutes
    return (f"| {name} | {minutes:g} | {version} | {r['steps']} | {r['minutes']:.2f} ({used:.1f} %) | "
            f"{r['process_minutes']:.2f} | {r['image_size']} | {r['mAP@0.5']:.3f} | {r['mAP']:.3f} |")


def spread(results: list[dict]) -> list[str]:
    """Rows of (dataset, budget, version): runs, median, min and max mAP@0.5, median mAP, median steps."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        if "error" not in r:
            groups.setdefault((r["dataset"], r["budget_minutes"], r["version"]), []).append(r)
    rows = []
    for (name, minutes, version), runs in groups.items():
        ap50 = sorted(r["mAP@0.5"] for r in runs)
        rows.append(f"| {name} | {minutes:g} | {version} | {len(runs)} | {statistics.median(ap50):.3f} | "
                    f"{ap50[0]:.3f}–{ap50[-1]:.3f} | {statistics.median(r['mAP'] for r in runs):.3f} | "
                    f"{statistics.median(r['steps'] for r in runs):.0f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m odpipe.bench.minutes", description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="sample,raccoon,crowded")
    parser.add_argument("--minutes", type=float, default=10.0, help="the budget every dataset is run at")
    parser.add_argument("--curve", default="raccoon:5,20", help="DATASET:M1,M2 more budgets for one dataset")
    parser.add_argument("--before", default="v0.2.0", help="git ref of the 'before' preset")
    parser.add_argument("--versions", default="before,after",
                        help="'before' (the --before ref), 'after' (this checkout) and any name given --flags")
    parser.add_argument("--flags", action="append", default=[], metavar="NAME=FLAGS",
                        help="a variant of this checkout: e.g. --flags 'no-mosaic=--mosaic 0' --versions after,no-mosaic")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each version (interleaved); "
                        "more than one ends with each recipe's median and range")
    parser.add_argument("--raccoon", default=None, help="raccoon labelImg folder (default ../shared/datasets/raccoon)")
    parser.add_argument("--workdir", help="keep records and model dirs here (default: a temporary folder)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    versions = [v for v in args.versions.split(",") if v]
    flags = {name: shlex.split(value) for name, _, value in (f.partition("=") for f in args.flags)}
    results = []
    with contextlib.ExitStack() as stack:
        work = args.workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="odpipe-bench-minutes-"))
        data = datasets.build([n for n in args.datasets.split(",") if n], work, args.raccoon)
        codes = {}
        for v in versions:
            try:
                codes[v] = stack.enter_context(checkout(args.before if v == "before" else None))
            except subprocess.CalledProcessError:
                print(f"  no git ref {args.before} in this checkout (git fetch --tags): '{v}' skipped", flush=True)
        versions = [v for v in versions if v in codes]
        print("| dataset | budget (min) | preset | steps | minutes used (share) | process min | input px | mAP@0.5 | mAP |",
              flush=True)
        print("|---|---|---|---|---|---|---|---|---|", flush=True)
        for name, minutes in _plan(list(data), args.minutes, args.curve):
            for repeat in range(max(1, args.repeats)):
                for version in versions:
                    print(f"  {name}, --time-budget {minutes:g}, {version}:", flush=True)
                    model_dir = os.path.join(work, "models", f"{name}-{minutes:g}-{version}-{repeat}")
                    shutil.rmtree(model_dir, ignore_errors=True)  # a fresh run, never a resume
                    r = train_run(codes[version], data[name], model_dir, minutes, flags.get(version, []))
                    results.append({"dataset": name, "budget_minutes": minutes, "version": version, "repeat": repeat,
                                    **r})
                    print(_row(name, minutes, version, r), flush=True)
                    save_json(args.json, results)  # after every run: a long table survives an interruption
        if args.repeats > 1:
            print("\n| dataset | budget (min) | preset | runs | median mAP@0.5 | range | median mAP | median steps |",
                  flush=True)
            print("|---|---|---|---|---|---|---|---|", flush=True)
            for row in spread(results):
                print(row, flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
