"""`--time-budget MINUTES`: size the training steps so that the whole run ends inside the budget.

The step rate depends on the machine, the image size and the boxes per image (dense photos train
much slower than sparse ones on a CPU), so it is measured, not guessed, inside the run itself (no
second model build or compile): the run trains WARMUP_STEPS steps (compile, input pipeline and
decoded-image cache filling up), times TIMED_STEPS more, and times one evaluation over the eval
records. With the time already spent since `train()` was called (record checks, model build,
restore, compile), the remaining steps are

    steps = rate * (budget * (1 - MARGIN) - spent - evaluations * eval_seconds)

counting the evaluations at the interval that step count gets (steps/5, at least 100, unless
--eval-interval is given). The schedule is Model Garden's warmup + cosine over a total held in a
variable (`odpipe.modeling.detection.PlannedWarmupCosine`): set to the planned total, it runs to its
end at the last step; planned and actual minutes are reported.

Budgets outside [MIN_MINUTES, MAX_MINUTES] are refused before anything runs: under a minute the
set-up and the measurement alone (model build, compile, 30 steps, one evaluation) take longer than
the budget on any machine odpipe was measured on, so the run could only overrun it; over a week the
step count planned from 20 timed steps is an extrapolation nobody should trust (and 1e17 minutes
overflows the step counter). A run whose measurement still overran its budget says so at the end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from odpipe.errors import UserError

WARMUP_STEPS = 10
TIMED_STEPS = 20
MARGIN = 0.03  # of the budget: checkpoint writes and the final save
MIN_MINUTES = 1.0  # set-up + measurement: 0.6-1 min measured on the 2-core CPU machine (tiny data, 128 px)
MAX_MINUTES = 7 * 24 * 60.0


def check_budget(minutes) -> float | None:
    """`minutes` as a float when it is a budget the measurement can honour; None stays None."""
    if minutes is None:
        return None
    try:
        value = float(minutes)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(minutes, bool) or not MIN_MINUTES <= value <= MAX_MINUTES:
        raise UserError(
            f"--time-budget {minutes}: must be between {MIN_MINUTES:g} and {MAX_MINUTES:g} minutes "
            f"(the smallest budget is {MIN_MINUTES:g}: set-up and the step-rate measurement alone take about "
            "that); for a shorter run give --steps instead"
        )
    return value


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


@dataclass(frozen=True)
class TimeBudget:
    """What `--time-budget` asks of a run (given when `--steps` is not).

    `started`: `time.monotonic()` when `train()` was called (checks, model build and compile count);
    `configure`: the run's effective config for a step count (`build_config` with the run's other
    options), so config.yaml can show the steps and schedule the run used; `eval_interval`: the
    user's `--eval-interval` (None: the default, which depends on the steps)."""

    minutes: float
    started: float
    configure: Callable[[int], Any]
    eval_interval: int | None = None


@dataclass
class BudgetPlan:
    """The steps a measured budget allows, and, once the run ended, how long it took
    (`result["time_budget"]` and train_result.json hold `as_dict()`)."""

    budget_minutes: float
    total_steps: int
    steps_per_second: float
    eval_seconds: float
    spent_minutes: float
    planned_minutes: float
    evaluations: int
    actual_minutes: float | None = None
    over_budget: bool | None = None

    def as_dict(self) -> dict:
        """The plan as JSON-ready values; the end-of-run fields only once they are known."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def finish(self, actual_minutes: float, steps: int) -> str:
        """Record how long the run took; the line that says whether it kept to the budget."""
        self.actual_minutes = actual_minutes
        self.over_budget = actual_minutes > self.budget_minutes
        if self.over_budget:
            return (f"time budget {self.budget_minutes:g} min: OVER BUDGET: took {actual_minutes:.2f} min ({steps} "
                    f"steps); set-up and measurement alone took {self.spent_minutes:.2f} min here, so the smallest "
                    f"budget on this machine is about {self.spent_minutes / (1 - MARGIN):.1f} min")
        return (f"time budget {self.budget_minutes:g} min: planned {self.planned_minutes:.2f} min, took "
                f"{actual_minutes:.2f} min ({steps} steps, schedule completed)")


def measure_and_plan(controller, global_step, validation_steps: int, budget: TimeBudget,
                     echo) -> tuple[BudgetPlan, dict]:
    """Train WARMUP + TIMED steps and evaluate once, timing them; returns the plan (see the module
    doc) and the measured evaluation's metrics."""
    minutes, t0 = budget.minutes, budget.started
    first = int(global_step.numpy())
    echo(f"time budget {minutes:g} min: measuring the step rate ({WARMUP_STEPS} + {TIMED_STEPS} steps, one evaluation)")
    controller.train(steps=first + WARMUP_STEPS)
    t1 = time.monotonic()
    controller.train(steps=first + WARMUP_STEPS + TIMED_STEPS)
    t2 = time.monotonic()
    logs = controller.evaluate(steps=validation_steps)
    t3 = time.monotonic()
    done = int(global_step.numpy())
    rate = (done - first - WARMUP_STEPS) / max(t2 - t1, 1e-9)
    eval_seconds = t3 - t2
    remaining = minutes * 60 * (1 - MARGIN) - (t3 - t0)
    extra, evals = size_steps(remaining, rate, eval_seconds, budget.eval_interval)
    planned = (t3 - t0) + extra / rate + evals * eval_seconds
    plan = BudgetPlan(budget_minutes=minutes, total_steps=done + extra, steps_per_second=rate,
                      eval_seconds=eval_seconds, spent_minutes=(t3 - t0) / 60, planned_minutes=planned / 60,
                      evaluations=evals + 1)
    if extra:
        echo(f"time budget {minutes:g} min: {rate:.2f} steps/s, {eval_seconds:.0f} s per evaluation, "
             f"{(t3 - t0) / 60:.1f} min spent -> {done + extra} steps in all, planned {planned / 60:.1f} min")
    else:
        echo(f"time budget {minutes:g} min: already {(t3 - t0) / 60:.1f} min spent at {rate:.2f} steps/s; "
             f"stopping at step {done} (give a longer budget or --steps)")
    return plan, logs
