"""`--time-budget MINUTES`: size the training steps so that the whole run ends inside the budget.

The step rate depends on the machine, the image size and the boxes per image, and it drifts while
the run goes on (the first steps run slower: caches fill up, the machine warms), so it is measured
inside the run itself and measured again as the run goes on:

1. The run trains WARMUP_STEPS steps (compile, input pipeline and decoded-image cache filling up),
   times TIMED_STEPS more, and plans the total from that rate, with an evaluation time estimated
   from the eval set's size (no evaluation is spent on a model 30 steps old).
2. Every sixth of the planned steps, and after every evaluation, it re-plans from the rate of all
   the training so far and the last evaluation's measured time:

       total = step + steps that fit (deadline - now), evaluations still to come included

   Re-planning may lengthen the run until FREEZE of it is done, and may shorten it at any time: the
   schedule's tail is then followed as planned. The schedule is Model Garden's warmup + cosine over a
   total held in a variable (`odpipe.modeling.detection.PlannedWarmupCosine`): re-planned early, the
   curve moves a little; at the last step it reaches its end.

The deadline is the budget less MARGIN (the final checkpoint and result files). Inside a budget the
run evaluates BUDGET_EVALUATIONS times (evaluation time is training time lost; the last one is the
model's final score) unless --eval-interval is given. Planned and taken steps and minutes, and
each re-plan, are reported (train_result.json "time_budget").

Budgets outside [MIN_MINUTES, MAX_MINUTES] are refused before anything runs: under a minute the
set-up and the measurement alone take longer than the budget on any machine odpipe was measured
on, so the run could only overrun it; over a week the plan is an extrapolation nobody should trust
(and 1e17 minutes overflows the step counter). A run that still overran its budget says so at the end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from odpipe.errors import UserError

WARMUP_STEPS = 10
TIMED_STEPS = 20
MARGIN = 0.015  # of the budget: the final checkpoint, result files and the process exit
BUDGET_EVALUATIONS = 3  # at a third, two thirds and the end of a budgeted run
REPLANS = 6  # the rate is measured again every 1/REPLANS of the planned steps (and after each evaluation)
FREEZE = 0.8  # after this share of the steps a re-plan may shorten the run, never lengthen it
EVAL_SETUP_SECONDS = 10.0  # first-evaluation estimate: tracing and COCO set-up, before one is measured
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
    """build_config's default interval between evaluations for `steps` total steps (no budget)."""
    return max(1, min(steps, max(steps // 5, 100)))


def budget_eval_interval(steps: int) -> int:
    """The interval between evaluations of a budgeted run of `steps` steps (BUDGET_EVALUATIONS in all)."""
    return max(1, math.ceil(steps / BUDGET_EVALUATIONS))


def evaluations_between(step: int, total: int, eval_interval: int | None, done: int = 0) -> int:
    """Evaluations after `step` up to `total`: with an interval, at each of its multiples and at the end;
    without one, the budget's BUDGET_EVALUATIONS less the `done` ones (the last, at the end, always)."""
    if total <= step:
        return 0
    if not eval_interval:
        return max(1, BUDGET_EVALUATIONS - done)
    return (total - 1) // eval_interval - step // eval_interval + 1


def fit_total(step: int, seconds: float, rate: float, eval_seconds: float, eval_interval: int | None = None,
              done: int = 0) -> int:
    """The largest total (>= `step`) whose remaining steps and evaluations fit `seconds` at `rate` steps/s."""
    if seconds <= 0 or rate <= 0:
        return step

    def cost(total: int) -> float:
        return (total - step) / rate + evaluations_between(step, total, eval_interval, done) * eval_seconds

    total = step + int(seconds * rate)
    while total > step and cost(total) > seconds:
        total -= max(1, int((cost(total) - seconds) * rate))
    total = max(step, total)
    while cost(total + 1) <= seconds:  # the jump down may overshoot by up to one evaluation's worth of steps
        total += 1
    return total


def size_steps(seconds: float, rate: float, eval_seconds: float, eval_interval: int | None = None) -> tuple[int, int]:
    """(steps, evaluations) of a run from step 0 that fit `seconds` of training + evaluation time."""
    steps = fit_total(0, seconds, rate, eval_seconds, eval_interval)
    return steps, evaluations_between(0, steps, eval_interval)


@dataclass(frozen=True)
class TimeBudget:
    """What `--time-budget` asks of a run (given when `--steps` is not).

    `started`: `time.monotonic()` when `train()` was called (checks, model build and compile count);
    `configure`: the run's effective config for a step count (`build_config` with the run's other
    options), so config.yaml can show the steps and schedule the run used; `eval_interval`: the
    user's `--eval-interval` (None: BUDGET_EVALUATIONS evaluations); `eval_images`: the eval set's
    size (the first evaluation's time is estimated from it)."""

    minutes: float
    started: float
    configure: Callable[[int], Any]
    eval_interval: int | None = None
    eval_images: int = 0


@dataclass
class BudgetPlan:
    """The steps a measured budget allows, re-planned as the run goes, and how long it took
    (`result["time_budget"]` and train_result.json hold `as_dict()`)."""

    budget_minutes: float
    total_steps: int
    initial_total_steps: int
    steps_per_second: float
    eval_seconds: float
    spent_minutes: float
    planned_minutes: float
    evaluations: int
    replans: list[dict] = field(default_factory=list)
    steps_taken: int | None = None
    actual_minutes: float | None = None
    used_share: float | None = None
    over_budget: bool | None = None

    def as_dict(self) -> dict:
        """The plan as JSON-ready values; the end-of-run fields only once they are known."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def finish(self, actual_minutes: float, steps: int) -> str:
        """Record how long the run took; the line that says whether it kept to the budget."""
        self.actual_minutes, self.steps_taken = actual_minutes, steps
        self.used_share = actual_minutes / self.budget_minutes
        self.over_budget = actual_minutes > self.budget_minutes
        if self.over_budget:
            return (f"time budget {self.budget_minutes:g} min: OVER BUDGET: took {actual_minutes:.2f} min ({steps} "
                    f"steps); set-up and measurement alone took {self.spent_minutes:.2f} min here, so the smallest "
                    f"budget on this machine is about {self.spent_minutes / (1 - MARGIN):.1f} min")
        return (f"time budget {self.budget_minutes:g} min: took {actual_minutes:.2f} min ({100 * self.used_share:.1f} %), "
                f"{steps} steps of {self.total_steps} planned (first plan {self.initial_total_steps}), schedule completed")


class BudgetRun:
    """A budgeted run's clock: measures the step rate, plans, re-plans, and says where to stop next."""

    def __init__(self, budget: TimeBudget, batch_size: int, echo):
        self.budget, self.batch_size, self.echo = budget, batch_size, echo
        self.deadline = budget.started + budget.minutes * 60 * (1 - MARGIN)
        self.train_steps, self.train_seconds = 0, 0.0
        self.eval_seconds: list[float] = []
        self.plan: BudgetPlan | None = None

    @property
    def total(self) -> int:
        return self.plan.total_steps

    @property
    def rate(self) -> float:
        return self.train_steps / max(self.train_seconds, 1e-9)

    def eval_estimate(self) -> float:
        """The last evaluation's time, or before any: the eval images at the training rate, plus set-up."""
        if self.eval_seconds:
            return self.eval_seconds[-1]
        return self.budget.eval_images / max(self.rate * self.batch_size, 1e-9) + EVAL_SETUP_SECONDS

    def measure(self, controller, global_step) -> BudgetPlan:
        """Train WARMUP + TIMED steps, timing the second part; the first plan."""
        minutes = self.budget.minutes
        first = int(global_step.numpy())
        self.echo(f"time budget {minutes:g} min: measuring the step rate ({WARMUP_STEPS} + {TIMED_STEPS} steps)")
        controller.train(steps=first + WARMUP_STEPS)
        t1 = time.monotonic()
        controller.train(steps=first + WARMUP_STEPS + TIMED_STEPS)
        self.trained(int(global_step.numpy()) - first - WARMUP_STEPS, time.monotonic() - t1)
        step = int(global_step.numpy())
        spent = time.monotonic() - self.budget.started
        total = self._fit(step)
        self.plan = BudgetPlan(budget_minutes=minutes, total_steps=total, initial_total_steps=total,
                               steps_per_second=self.rate, eval_seconds=self.eval_estimate(), spent_minutes=spent / 60,
                               planned_minutes=self._planned_minutes(step, total),
                               evaluations=self._evaluations_left(step, total))
        if total > step:
            self.echo(f"time budget {minutes:g} min: {self.rate:.2f} steps/s, ~{self.eval_estimate():.0f} s per "
                      f"evaluation (estimated), {spent / 60:.1f} min spent -> {total} steps in all, planned "
                      f"{self.plan.planned_minutes:.1f} min (re-measured as the run goes)")
        else:
            self.echo(f"time budget {minutes:g} min: already {spent / 60:.1f} min spent at {self.rate:.2f} steps/s; "
                      f"stopping at step {step} (give a longer budget or --steps)")
        return self.plan

    def _planned_minutes(self, step: int, total: int) -> float:
        ahead = (total - step) / max(self.rate, 1e-9)
        ahead += self._evaluations_left(step, total) * self.eval_estimate()
        return (time.monotonic() + ahead - self.budget.started) / 60

    def trained(self, steps: int, seconds: float) -> None:
        self.train_steps += steps
        self.train_seconds += seconds

    def evaluated(self, seconds: float) -> None:
        self.eval_seconds.append(seconds)

    def _evaluations_left(self, step: int, total: int) -> int:
        return evaluations_between(step, total, self.budget.eval_interval, len(self.eval_seconds))

    def _fit(self, step: int) -> int:
        return fit_total(step, self.deadline - time.monotonic(), self.rate, self.eval_estimate(), self.budget.eval_interval,
                         len(self.eval_seconds))

    def next_eval(self, step: int) -> int:
        """The step of the next evaluation: the next multiple of --eval-interval, else the next of the budget's
        BUDGET_EVALUATIONS at equal shares of the current total (the last at the end)."""
        total, interval = self.total, self.budget.eval_interval
        if interval:
            return min(total, (step // interval + 1) * interval)
        share = len(self.eval_seconds) + 1
        if share >= BUDGET_EVALUATIONS:
            return total
        return min(total, max(math.ceil(share * total / BUDGET_EVALUATIONS), step + 1))

    def next_stop(self, step: int) -> tuple[int, bool]:
        """(the step to train to next, whether to evaluate there): the next evaluation, the next re-plan (a
        1/REPLANS share of the plan after this stop, whatever the total became) or the end."""
        next_eval = self.next_eval(step)
        stop = min(next_eval, step + max(1, math.ceil(self.total / REPLANS)))
        return stop, stop == next_eval

    def replan(self, step: int) -> int:
        """The total re-planned at `step` from the rate so far and the last evaluation's time."""
        plan = self.plan
        total = self._fit(step)
        if step >= FREEZE * plan.total_steps:
            total = min(total, plan.total_steps)
        total = max(total, step)
        if total != plan.total_steps:
            self.echo(f"time budget {plan.budget_minutes:g} min: re-planned at step {step}: {self.rate:.2f} steps/s, "
                      f"{self.eval_estimate():.0f} s per evaluation -> {total} steps (was {plan.total_steps})")
            plan.replans.append({"step": step, "total_steps": total, "previous": plan.total_steps,
                                 "steps_per_second": round(self.rate, 4), "eval_seconds": round(self.eval_estimate(), 2),
                                 "minutes": round((time.monotonic() - self.budget.started) / 60, 3)})
        plan.total_steps, plan.steps_per_second, plan.eval_seconds = total, self.rate, self.eval_estimate()
        plan.planned_minutes = self._planned_minutes(step, total)
        plan.evaluations = len(self.eval_seconds) + self._evaluations_left(step, total)
        return total
