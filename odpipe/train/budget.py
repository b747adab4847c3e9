"""`--time-budget MINUTES`: size the training steps so that the whole run ends inside the budget.

The step rate depends on the machine, the image size and the boxes per image (dense photos train
much slower than sparse ones on a CPU), so it is measured, not guessed: a short calibration run of
the same config (same model, input pipeline and start checkpoint, in a temporary model dir) times
the set-up (model build, restore, compile, first batches), WARMUP_STEPS steps, then TIMED_STEPS
steps after the warm-up, and one evaluation over the eval records. The total steps are then

    steps = rate * (budget - calibration - set-up - evaluations * eval_seconds - margin)

with the evaluations counted at the interval that step count gets (steps/5, at least 100, unless
--eval-interval is given). The warmup + cosine schedule is built for exactly that many steps, so it
runs to its end; planned and actual minutes are reported.
"""

from __future__ import annotations

import gc
import math
import tempfile
import time

from odpipe.errors import UserError
from odpipe.train.config import positive

WARMUP_STEPS = 10
TIMED_STEPS = 20
MARGIN = 0.04  # of the budget, for checkpoint writes and the final save


def default_eval_interval(steps: int) -> int:
    """build_config's default interval between evaluations for `steps` total steps."""
    return max(1, min(steps, max(steps // 5, 100)))


def size_steps(seconds: float, rate: float, eval_seconds: float, eval_interval: int | None = None) -> tuple[int, int]:
    """(steps, evaluations) that fit `seconds` of training + evaluation time at `rate` steps/s.

    Evaluations run every `eval_interval` steps and once at the end (the default interval depends
    on the step count: solved by iteration).
    """
    if seconds <= 0 or rate <= 0:
        return 0, 0
    steps = int(seconds * rate)
    for _ in range(20):
        interval = eval_interval or default_eval_interval(max(steps, 1))
        evals = max(1, math.ceil(max(steps, 1) / interval))
        new = int(max(0.0, seconds - evals * eval_seconds) * rate)
        if new == steps:
            break
        steps = new
    interval = eval_interval or default_eval_interval(max(steps, 1))
    return steps, max(1, math.ceil(max(steps, 1) / interval)) if steps else 0


def calibrate(config) -> dict:
    """{"setup_seconds", "steps_per_second", "eval_seconds"} measured with `config` (steps, intervals set for it)."""
    from odpipe.train.progress import library_output
    from odpipe.train.trainer import make_runner

    with tempfile.TemporaryDirectory(prefix="odpipe-calibrate-") as tmp, library_output(False):
        t0 = time.monotonic()
        dist, runner = make_runner(config, tmp)
        controller = runner.controller
        with dist.scope():
            controller.train(steps=WARMUP_STEPS)
            t1 = time.monotonic()
            controller.train(steps=WARMUP_STEPS + TIMED_STEPS)
            t2 = time.monotonic()
            controller.evaluate(steps=config.trainer.validation_steps)
            t3 = time.monotonic()
        del runner, controller
        gc.collect()
    rate = TIMED_STEPS / max(t2 - t1, 1e-9)
    return {"setup_seconds": max(0.0, (t1 - t0) - WARMUP_STEPS / rate), "steps_per_second": rate,
            "eval_seconds": t3 - t2, "calibration_seconds": t3 - t0}


def plan_budget(configure, minutes, resume_step: int, echo) -> tuple:
    """(config sized to the budget, plan dict) — `configure(steps, **options)` builds a config."""
    minutes = positive("--time-budget", minutes, float)
    t0 = time.monotonic()
    probe_steps = WARMUP_STEPS + TIMED_STEPS
    probe = configure(probe_steps, eval_interval=probe_steps,
                      checkpoint_interval=probe_steps, steps_per_loop=WARMUP_STEPS)
    user_interval = _user_eval_interval(configure)
    echo(f"time budget {minutes:g} min: measuring the step rate ({WARMUP_STEPS} + {TIMED_STEPS} steps, one evaluation)")
    measured = calibrate(probe)
    spent = time.monotonic() - t0
    budget = minutes * 60
    available = budget * (1 - MARGIN) - spent - measured["setup_seconds"]
    steps, evals = size_steps(available, measured["steps_per_second"], measured["eval_seconds"], user_interval)
    if steps < WARMUP_STEPS:
        need = (spent + measured["setup_seconds"] + measured["eval_seconds"] + 50 / measured["steps_per_second"])
        raise UserError(
            f"--time-budget {minutes:g}: too short here ({measured['steps_per_second']:.2f} steps/s, "
            f"{measured['eval_seconds']:.0f} s per evaluation, {spent + measured['setup_seconds']:.0f} s set-up); "
            f"give at least {math.ceil(need / 60 / (1 - MARGIN))} minutes or --steps"
        )
    config = configure(resume_step + steps)
    planned = spent + measured["setup_seconds"] + steps / measured["steps_per_second"] + evals * measured["eval_seconds"]
    plan = {"budget_minutes": minutes, "planned_minutes": planned / 60, "steps": steps, "evaluations": evals,
            "calibration_minutes": spent / 60, **{k: measured[k] for k in ("steps_per_second", "eval_seconds",
                                                                          "setup_seconds")}, "_t0": t0}
    echo(f"time budget {minutes:g} min: {measured['steps_per_second']:.2f} steps/s, {measured['eval_seconds']:.0f} s "
         f"per evaluation -> {steps} steps, {evals} evaluation(s), planned {planned / 60:.1f} min")
    return config, plan


def _user_eval_interval(configure) -> int | None:
    """The --eval-interval the user gave (None when it follows the step count)."""
    a = configure(1000).trainer.validation_interval
    b = configure(2000).trainer.validation_interval
    return a if a == b else None
