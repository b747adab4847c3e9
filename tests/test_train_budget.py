"""--time-budget: the planning arithmetic (the real budgeted run is measured by `make bench`)."""

from __future__ import annotations

import json

import pytest


def test_size_steps_fits_training_and_evaluations():
    from odpipe.train.budget import budget_eval_interval, size_steps

    steps, evals = size_steps(seconds=150, rate=2.0, eval_seconds=5.0)
    assert evals == 3 and budget_eval_interval(steps) == -(-steps // 3)  # a third, two thirds, the end
    assert steps / 2.0 + evals * 5.0 <= 150 < (steps + 2) / 2.0 + evals * 5.0  # uses the time, and no more
    # a fixed --eval-interval: evaluations follow it
    steps, evals = size_steps(seconds=150, rate=2.0, eval_seconds=5.0, eval_interval=20)
    assert evals == -(-steps // 20) and steps / 2.0 + evals * 5.0 <= 150
    assert size_steps(seconds=-1, rate=2.0, eval_seconds=1.0) == (0, 0)
    assert size_steps(seconds=10, rate=1.0, eval_seconds=20.0)[0] == 0  # evaluations alone do not fit


def test_evaluations_still_to_come_are_counted_from_the_current_step():
    from odpipe.train.budget import evaluations_between, fit_total

    assert evaluations_between(0, 300, None) == 3  # a third, two thirds, the end
    assert evaluations_between(100, 300, None, done=1) == 2 and evaluations_between(250, 300, None, done=2) == 1
    assert evaluations_between(290, 300, None, done=5) == 1  # the final one always
    assert evaluations_between(300, 300, None) == 0
    assert evaluations_between(0, 95, 10) == 10  # 10..90 and the end
    total = fit_total(500, seconds=100, rate=3.0, eval_seconds=10.0, done=1)
    assert (total - 500) / 3.0 + evaluations_between(500, total, None, done=1) * 10 <= 100
    assert (total + 1 - 500) / 3.0 + evaluations_between(500, total + 1, None, done=1) * 10 > 100
    total = fit_total(500, seconds=100, rate=3.0, eval_seconds=10.0, eval_interval=50)
    assert (total - 500) / 3.0 + evaluations_between(500, total, 50) * 10 <= 100
    assert (total + 1 - 500) / 3.0 + evaluations_between(500, total + 1, 50) * 10 > 100
    assert fit_total(500, seconds=-5, rate=3.0, eval_seconds=1.0) == 500  # time is up: stop where it stands


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class _FakeController:
    """Orbit's controller as the budget sees it: train(steps=N) advances the step at a rate that may drift."""

    def __init__(self, clock, rate):
        self.clock, self.rate, self.step = clock, rate, 0

    def train(self, steps):
        self.clock.now += (steps - self.step) / self.rate(self.step)
        self.step = steps


class _Step:
    def __init__(self, controller):
        self.controller = controller

    def numpy(self):
        return self.controller.step


def _drive(run, controller, clock, eval_seconds: float, stops: list | None = None) -> list[int]:
    """The trainer's budget loop (`trainer._train_to_budget`) on the fake clock; the steps evaluated at."""
    step, at = controller.step, []
    while step < run.total:
        stop, evaluate = run.next_stop(step)
        if stops is not None:
            stops.append(stop)
        started = clock.now
        controller.train(stop)
        run.trained(stop - step, clock.now - started)
        step = stop
        if evaluate:
            clock.now += eval_seconds
            run.evaluated(eval_seconds)
            at.append(step)
        if step < run.total:
            run.replan(step)
    return at


def test_a_run_that_speeds_up_is_replanned_and_uses_its_budget(monkeypatch):
    """The issue's run: measured 2.07 steps/s at the start, then ran at 2.6, and stopped at 7.5 of 10
    minutes. Re-planned as it goes, the same run ends within the last 3 % of its budget."""
    from odpipe.train import budget as budget_module
    from odpipe.train.budget import BudgetRun, TimeBudget

    clock = _Clock()
    monkeypatch.setattr(budget_module.time, "monotonic", clock)
    controller = _FakeController(clock, lambda step: 2.07 if step < 30 else 2.6)
    messages = []
    run = BudgetRun(TimeBudget(10, clock.now - 45, lambda n: None, None, eval_images=40), 8, messages.append)
    plan = run.measure(controller, _Step(controller))
    first = plan.total_steps
    stops = []
    at = _drive(run, controller, clock, eval_seconds=12.0, stops=stops)
    evaluations = len(at)
    used = (clock.now - (run.budget.started)) / 600
    assert 0.97 <= used <= 1.0, used
    assert run.total > first * 1.15 and plan.replans and plan.initial_total_steps == first
    assert evaluations == 3 and any("re-planned at step" in m for m in messages)
    assert at[-1] == run.total and min(b - a for a, b in zip([0] + at, at)) > run.total / 4, at  # spread, not bunched
    # re-planned about every sixth of the plan; a grown total does not bring the next re-plan a few steps later
    short = [b - a for a, b in zip(stops, stops[1:]) if b not in at and b != run.total]
    assert short and min(short) > run.total / 12, stops


def test_a_run_that_slows_down_late_is_shortened_not_overrun(monkeypatch):
    from odpipe.train import budget as budget_module
    from odpipe.train.budget import BudgetRun, TimeBudget

    clock = _Clock()
    monkeypatch.setattr(budget_module.time, "monotonic", clock)
    controller = _FakeController(clock, lambda step: 3.0 if step < 1000 else 1.5)  # the machine gets busy
    run = BudgetRun(TimeBudget(10, clock.now - 30, lambda n: None, None, eval_images=40), 8, lambda m: None)
    run.measure(controller, _Step(controller))
    _drive(run, controller, clock, eval_seconds=10.0)
    used = (clock.now - run.budget.started) / 600
    assert used <= 1.02, used  # the tail after the last re-plan is the only part run at a stale rate


def test_steps_win_over_a_time_budget_and_bad_budgets_are_errors():
    from odpipe.errors import UserError
    from odpipe.train.config import positive

    for bad in (0, -3, float("nan")):
        with pytest.raises(UserError, match="--time-budget"):
            positive("--time-budget", bad, float)
    assert positive("--time-budget", None, float) is None
    assert positive("--time-budget", 2.5, float) == 2.5


def test_budgets_the_measurement_cannot_honour_are_refused_naming_the_smallest():
    """--time-budget 0.01 trained 64 times longer than asked and 1e17 ended in an int64 traceback."""
    from odpipe.errors import UserError
    from odpipe.train.budget import MAX_MINUTES, MIN_MINUTES, check_budget

    for bad in (0.01, 1e17, 0, -3, float("nan"), float("inf"), "ten", True):
        with pytest.raises(UserError, match=r"--time-budget .*between 1 and 10080 minutes.*smallest budget is 1") as err:
            check_budget(bad)
        assert "omit it for the default" not in str(err.value)  # there is no default budget
    assert check_budget(None) is None
    assert check_budget(MIN_MINUTES) == 1.0 and check_budget("2.5") == 2.5 and check_budget(MAX_MINUTES) == MAX_MINUTES


def test_cli_refuses_a_tiny_budget_before_writing_anything(records, label_map_path, tmp_path, capsys):
    from odpipe.cli import main

    rc = main(["train", "--train", records["train"], "--eval", records["eval"], "--label-map", str(label_map_path),
               "--model-dir", str(tmp_path / "m"), "--init-checkpoint", "none", "--time-budget", "0.01"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--time-budget 0.01" in err[0] and "smallest budget is 1" in err[0]
    assert not (tmp_path / "m").exists()


def test_planned_schedule_is_model_gardens_warmup_cosine_for_the_planned_total():
    import numpy as np
    import tensorflow as tf
    from official.modeling import optimization
    from official.modeling.optimization.configs import optimization_config

    from odpipe.modeling.detection import PlannedWarmupCosine
    from odpipe.train.presets import schedule

    def model_garden(total):
        config = optimization_config.OptimizationConfig(schedule(total, 0.08, 0.05))
        return optimization.OptimizerFactory(config).build_learning_rate()

    provisional = optimization_config.OptimizationConfig(schedule(1500, 0.08, 0.05))
    total = tf.Variable(1500, dtype=tf.int64)
    planned = PlannedWarmupCosine.from_config_of(provisional, total)
    steps = [0, 1, 10, 74, 75, 76, 300, 1000, 1499, 1500]
    assert np.allclose([planned(s).numpy() for s in steps], [model_garden(1500)(s).numpy() for s in steps], rtol=1e-5)
    total.assign(164)  # what a time budget measured fits: the same curve, ending at step 164
    steps = [0, 4, 8, 9, 50, 163, 164]
    assert np.allclose([planned(s).numpy() for s in steps], [model_garden(164)(s).numpy() for s in steps], rtol=1e-5)
    assert planned(164).numpy() == pytest.approx(0.08 * 0.01, rel=1e-4)  # the schedule ends: alpha * peak


def test_a_budgeted_run_follows_its_typed_plan_and_reports_it(records, label_map_path, tmp_path):
    """A real 1-minute run: the plan (odpipe.train.budget.BudgetPlan) sizes the steps, config.yaml shows
    them, and the plan with the actual minutes is the result's "time_budget" and train_result.json's."""
    import yaml
    from fixture_model import FIXTURE_TRAIN

    from odpipe.train import train

    options = {k: v for k, v in FIXTURE_TRAIN.items() if k not in ("steps", "eval_interval")}
    messages: list[str] = []
    model_dir = tmp_path / "budgeted"
    result = train(records["train"], records["eval"], str(label_map_path), str(model_dir), echo=messages.append,
                   time_budget=1.0, eval_steps=1, **options)
    plan = result["time_budget"]
    assert sorted(plan) >= sorted(["budget_minutes", "total_steps", "initial_total_steps", "steps_per_second",
                                   "eval_seconds", "spent_minutes", "planned_minutes", "evaluations", "replans",
                                   "steps_taken", "actual_minutes", "used_share", "over_budget"])
    assert plan["budget_minutes"] == 1.0 and plan["total_steps"] == plan["steps_taken"] == result["step"] >= 30
    assert plan["over_budget"] == (plan["actual_minutes"] > 1.0) and "plan" not in result
    saved = json.loads((model_dir / "train_result.json").read_text())
    assert saved["time_budget"] == plan and saved["step"] == result["step"]
    config = yaml.safe_load((model_dir / "config.yaml").read_text())
    assert config["trainer"]["train_steps"] == plan["total_steps"]
    assert any(m.startswith("time budget 1 min: ") and ("planned" in m or "OVER BUDGET" in m) for m in messages[-2:])
    assert result["image_size"] == config["task"]["model"]["input_size"][0]
