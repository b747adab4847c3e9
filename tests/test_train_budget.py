"""--time-budget: the planning arithmetic (the real budgeted run is measured by `make bench`)."""

from __future__ import annotations

import pytest


def test_size_steps_fits_training_and_evaluations():
    from odpipe.train.budget import default_eval_interval, size_steps

    steps, evals = size_steps(seconds=150, rate=2.0, eval_seconds=5.0)
    interval = default_eval_interval(steps)
    assert evals == -(-steps // interval)
    assert steps / 2.0 + evals * 5.0 <= 150 < (steps + 2) / 2.0 + evals * 5.0  # uses the time, and no more
    # a fixed --eval-interval: evaluations follow it
    steps, evals = size_steps(seconds=150, rate=2.0, eval_seconds=5.0, eval_interval=20)
    assert evals == -(-steps // 20) and steps / 2.0 + evals * 5.0 <= 150
    assert size_steps(seconds=-1, rate=2.0, eval_seconds=1.0) == (0, 0)
    assert size_steps(seconds=10, rate=1.0, eval_seconds=20.0)[0] == 0  # evaluations alone do not fit


def test_steps_win_over_a_time_budget_and_bad_budgets_are_errors():
    from odpipe.errors import UserError
    from odpipe.train.config import positive

    for bad in (0, -3, float("nan")):
        with pytest.raises(UserError, match="--time-budget"):
            positive("--time-budget", bad, float)
    assert positive("--time-budget", None, float) is None
    assert positive("--time-budget", 2.5, float) == 2.5
