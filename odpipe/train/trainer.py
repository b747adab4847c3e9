"""Run training: checks first, then Model Garden's task and trainer on an Orbit controller.

Order: label map -> records (examples, classes vs the label map) -> config -> model dir (resumable?
writable?) -> start checkpoint reachable -> [time budget: measure, size the steps] -> write
config.yaml, label_map.pbtxt, odpipe.json -> train. Nothing is written before every check passed.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import sys
import time
from typing import Any

from odpipe.errors import UserError, first_line
from odpipe.label_map import format_label_map, read_label_map
from odpipe.storage import tfio
from odpipe.train import checks
from odpipe.train.budget import BudgetRun, TimeBudget, budget_eval_interval, check_budget
from odpipe.train.config import BEST_METRIC, BEST_SUBDIR, build_config, experiment_config, save_config, select_runtime
from odpipe.train.input_size import choose_input_size
from odpipe.train.presets import DEFAULT_PRESET, PRESETS
from odpipe.train.progress import EarlyStopping, Progress, library_output, scalar_logs

# TensorFlow, Model Garden and odpipe.modeling.detection (which imports both) are imported inside the
# functions that train: seconds of start-up that `odpipe train`'s checks and --help do not need.


def _visible_gpus() -> int:
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def train(
    train_pattern: str,
    eval_pattern: str,
    label_map_path: str,
    model_dir: str,
    model: str = DEFAULT_PRESET,
    image_size: int | None = None,
    batch_size: int | None = None,
    steps: int | None = None,
    init_checkpoint: str | None = None,
    config_overrides: str | dict | None = None,
    strategy: str = "auto",
    tpu: str | None = None,
    **options: Any,
) -> dict:
    """Train (or resume training) a detector; returns {"step", "loss", "metrics", "model_dir", "init", ...}.

    init_checkpoint: None / "default" = the preset's published pretrained checkpoint (must be
    reachable: offline, pass "none"), "none" = from scratch, or a folder/prefix/.index/.data path.
    image_size None: chosen from the training boxes and the model's anchors (input_size.py).
    Options: learning_rate, eval_interval, checkpoint_interval, steps_per_loop, eval_steps,
    eval_batch_size, init_checkpoint_modules ("all" | "backbone" | "backbone,decoder"), aug_hflip,
    aug_scale_min, aug_scale_max, aug_type ("none" | "autoaugment" | "randaugment"), mosaic (share of
    training images made mosaics of four), jit_compile (XLA train step; both default to the preset's), early_stopping
    (P evals without better eval mAP@0.5; 0 = off), time_budget (minutes; sizes the steps when
    `steps` is None, re-planned as the run goes: budget.py; counted from `started`, a time.monotonic()
    reading, when given: the CLI passes its own start, imports included), verbose (Orbit's summary dicts
    on stdout), echo (a print-like callable), release_inputs (False: leave the input pipeline to the
    process's end, as the CLI does; default True).
    """
    # a time budget counts from here (or from `started`, the command's start): checks, model build, compile included
    t0 = options.pop("started", None) or time.monotonic()
    out = sys.stdout
    given = options.pop("echo", None) or (lambda msg: print(msg, flush=True))

    def echo(msg: str) -> None:  # odpipe's lines reach the real stdout while Orbit's prints are silenced
        with contextlib.redirect_stdout(out):
            given(msg)

    patience = int(options.pop("early_stopping", 0) or 0)
    if patience < 0:
        raise UserError(f"--early-stopping {patience}: must be 0 (off) or a positive number of evaluations")
    time_budget = check_budget(options.pop("time_budget", None))
    extras = task_extras(model, options.pop("mosaic", None), options.pop("jit_compile", None))
    verbose = bool(options.pop("verbose", False))
    release = bool(options.pop("release_inputs", True))
    model_dir = str(model_dir).rstrip("/")
    label_map = read_label_map(label_map_path)
    scans = {}
    for flag, pattern in (("--train", train_pattern), ("--eval", eval_pattern)):
        scans[flag] = checks.scan_records(pattern, flag)
        checks.check_records(scans[flag], label_map, label_map_path, flag, pattern)
    runtime = select_runtime(strategy, tpu, _visible_gpus() if strategy in ("auto", "gpu", "mirrored") else 0)

    def configure(n_steps, **extra):
        return build_config(train_pattern, eval_pattern, label_map, model, image_size, batch_size, n_steps,
                            init_checkpoint, config_overrides, runtime, **{**options, **extra})

    config = configure(steps)
    size_reason = None
    if image_size is None:  # chosen from the training boxes and the model's anchors (input_size.py)
        image_size, size_reason = choose_input_size(scans["--train"]["box_sides"], config.task)
        echo(size_reason)
        config = configure(steps)
    resume_step = checks.check_model_dir(model_dir, config, label_map)
    init = _previous_init(model_dir) if resume_step else None
    init = dict(init, resumed=True) if init else _init_info(config, model, resumed=bool(resume_step))
    if not resume_step:
        checks.check_init_checkpoint(init)
    checks.check_writable(model_dir)
    budget = None
    if time_budget is not None and steps is None:
        budget = TimeBudget(time_budget, t0, configure, options.get("eval_interval"), scans["--eval"]["examples"])
    elif time_budget is not None:
        echo(f"--steps {steps} given: it wins over --time-budget {time_budget:g}")
    result = run_training(config, model_dir, label_map, model=model, patience=patience, echo=echo, verbose=verbose,
                          init=init, budget=budget, size_reason=size_reason, extras=extras, release=release)
    if budget is not None:
        plan = result.pop("plan")
        echo(plan.finish((time.monotonic() - t0) / 60, result["step"]))
        result["time_budget"] = plan.as_dict()
        _write_json(f"{model_dir}/train_result.json", {k: v for k, v in result.items() if k != "losses"})
    return result


def _init_info(config, model: str, resumed: bool) -> dict:
    """{"checkpoint", "modules", "source": "default" | "user" | "none"} of the run's start."""
    checkpoint = config.task.init_checkpoint or None
    modules = config.task.init_checkpoint_modules
    modules = ",".join(modules) if isinstance(modules, (list, tuple)) else modules
    default = experiment_config(model).task.init_checkpoint or None
    source = "none" if not checkpoint else "default" if checkpoint == default else "user"
    info = {"checkpoint": checkpoint, "modules": modules if checkpoint else None, "source": source}
    if resumed:
        info["resumed"] = True  # the model dir's own checkpoint is restored; the start above was used before
    return info


def _previous_init(model_dir: str) -> dict | None:
    """The start recorded by the run that created `model_dir` (odpipe.json), if any."""
    import tensorflow as tf

    try:
        return json.loads(tfio.read_text(f"{model_dir}/odpipe.json")).get("init")
    except (tf.errors.OpError, ValueError, OSError):
        return None


def _write_json(path: str, data: dict) -> None:
    tfio.write_text(path, json.dumps(data, indent=2, default=float))


def _write_model_dir(config, model_dir: str, label_map: dict[int, str], model: str, init: dict) -> None:
    import tensorflow as tf

    try:
        save_config(config, model_dir)
        tfio.write_text(f"{model_dir}/label_map.pbtxt", format_label_map(label_map))
        preset = PRESETS.get(model)
        _write_json(f"{model_dir}/odpipe.json",
                    {"model": model, "experiment": preset.experiment if preset else model, "init": init})
    except (tf.errors.OpError, OSError) as err:
        raise UserError(f"--model-dir {model_dir}: cannot write ({first_line(err, 160)}); check the folder") from None


def task_extras(model: str, mosaic=None, jit_compile=None) -> dict:
    """{"mosaic", "jit_compile"}: the training options Model Garden's config has no key for (set on the
    task, `odpipe.modeling.detection`): the user's, else the preset's, else off."""
    preset = PRESETS.get(model)
    if mosaic is not None:
        try:
            mosaic = float(mosaic)
        except (TypeError, ValueError):
            mosaic = math.nan
        if isinstance(mosaic, bool) or not 0 <= mosaic <= 1:
            raise UserError("--mosaic: must be a share between 0 (off) and 1 (every training image a mosaic)")
    return {"mosaic": mosaic if mosaic is not None else (preset.mosaic if preset else 0.0),
            "jit_compile": bool(jit_compile) if jit_compile is not None else bool(preset and preset.jit_compile)}


def make_runner(config, model_dir: str, planned_steps: bool = False, extras: dict | None = None):
    """(distribution strategy, Model Garden `OrbitExperimentRunner`, planned-steps variable or None) for
    `config` in `model_dir`; with `planned_steps`, the schedule follows the variable (a time budget);
    `extras` (`task_extras`) are set on the task."""
    import tensorflow as tf
    from official.common import distribute_utils
    from official.core import train_lib
    from official.modeling import performance

    from odpipe.modeling.detection import build_task

    performance.set_mixed_precision_policy(getattr(tf, config.runtime.mixed_precision_dtype))
    dist = distribute_utils.get_distribution_strategy(
        distribution_strategy=config.runtime.distribution_strategy,
        num_gpus=config.runtime.num_gpus,
        tpu_address=config.runtime.tpu or None,
    )
    with dist.scope():
        task = build_task(config.task, logging_dir=model_dir)
        for key, value in (extras or {}).items():
            setattr(task, key, value)
        if planned_steps:
            task.planned_steps = tf.Variable(config.trainer.train_steps, dtype=tf.int64, trainable=False)
    runner = train_lib.OrbitExperimentRunner(
        distribution_strategy=dist, task=task, mode="train_and_eval", params=config, model_dir=model_dir,
        run_post_eval=False,
    )
    return dist, runner, task.planned_steps


class _Evaluations:
    """The run's evaluations: each one's metrics, duration, and mAP against minutes since `t0`."""

    def __init__(self, t0: float, progress: Progress, echo):
        self.t0, self.progress, self.echo = t0, progress, echo
        self.seconds: list[float] = []
        self.history: list[dict] = []  # mAP against minutes since the start (set-up included)
        self.last: dict = {}

    def record(self, logs: dict, seconds: float, step: int) -> dict:
        logs = self.last = scalar_logs(logs)
        self.seconds.append(seconds)
        self.history.append({"step": step, "minutes": (time.monotonic() - self.t0) / 60, "mAP": logs.get("AP"),
                             "mAP@0.5": logs.get(BEST_METRIC)})
        self.progress.last_time = time.monotonic()  # steps/s and ETA count training time only
        self.echo(f"eval at step {step}: mAP {logs.get('AP', float('nan')):.3f}  "
                  f"mAP@0.5 {logs.get(BEST_METRIC, float('nan')):.3f}  loss {logs.get('total_loss', float('nan')):.4f}")
        return logs


def run_training(config, model_dir: str, label_map: dict[int, str], model: str = "", patience: int = 0, echo=print,
                 verbose: bool = False, init: dict | None = None, budget: TimeBudget | None = None,
                 size_reason: str | None = None, extras: dict | None = None, release: bool = True) -> dict:
    """Train with an effective config (from `build_config`) into `model_dir`; resumes if possible.

    `budget` sizes the steps in the run (`budget.py`); the result then holds its `BudgetPlan` as "plan".
    `release`: free the training input pipeline before returning; the CLI, which ends the process at once
    instead (`cli.exit_now`), passes False. train_result.json's finish_seconds times the end.
    """
    model_dir = str(model_dir).rstrip("/")
    init = init or {"checkpoint": config.task.init_checkpoint or None, "source": "config"}
    _write_model_dir(config, model_dir, label_map, model, init)
    t0 = time.monotonic()
    with library_output(verbose):
        dist, runner, planned = make_runner(config, model_dir, planned_steps=budget is not None, extras=extras)
    global_step = runner.trainer.global_step
    start = int(global_step.numpy())
    _say_start(start, config.trainer.train_steps, model_dir, init, echo)
    progress = Progress(global_step, config.trainer.train_steps, config.task.train_data.global_batch_size, echo)
    controller = runner.controller
    controller.train_actions = list(controller.train_actions or []) + [progress]
    evals, stopper = _Evaluations(t0, progress, echo), EarlyStopping(patience)
    total, interval, plan = config.trainer.train_steps, config.trainer.validation_interval, None
    with library_output(verbose), dist.scope():
        if budget is not None:
            clock = BudgetRun(budget, config.task.train_data.global_batch_size, echo)
            plan = clock.measure(controller, global_step)
            progress.total = plan.total_steps
            planned.assign(plan.total_steps)
            save_config(_budget_config(budget, plan.total_steps), model_dir)  # config.yaml: the steps and schedule used
            stopped_early = _train_to_budget(controller, global_step, clock, planned, progress,
                                             config.trainer.validation_steps, evals, stopper, echo)
            save_config(_budget_config(budget, plan.total_steps), model_dir)
        else:
            stopped_early = _train_and_evaluate(controller, global_step, total, interval,
                                                config.trainer.validation_steps, evals, stopper, echo)
        finish = _timed({}, "save", lambda: controller.checkpoint_manager and int(global_step.numpy()) > 0
                        and controller.checkpoint_manager.save(checkpoint_number=global_step, check_interval=False))
        _timed(finish, "flush", lambda: _flush_summaries(controller))  # TensorBoard's last points, whatever comes next
    if release:  # 0.4 s in most runs; 45-56 s in some 10-minute ones (cause not found: timed here)
        _timed(finish, "release_inputs", lambda: setattr(runner.trainer, "train_dataset", None))
        _timed(finish, "gc", gc.collect)
    else:  # held, so that no garbage collection on the way out starts the teardown
        LEFT_TO_EXIT.append(runner)
    result = _result(config, model_dir, init, start, int(global_step.numpy()), progress, evals, stopped_early, t0)
    result["finish_seconds"] = {k: round(v, 2) for k, v in finish.items()}
    result["image_size_reason"] = size_reason or "given (--image-size or the config)"
    result.update(extras or {})
    _write_json(f"{model_dir}/train_result.json",
                {**{k: v for k, v in result.items() if k != "losses"},
                 **({"time_budget": plan.as_dict()} if plan is not None else {})})
    if plan is not None:
        result["plan"] = plan
    return result


LEFT_TO_EXIT: list = []  # runners whose input pipelines the process's end frees (run_training's `release`)


def _timed(times: dict, name: str, call) -> dict:
    """Run `call`, adding its seconds to `times[name]` (train_result.json's finish_seconds)."""
    started = time.monotonic()
    call()
    times[name] = time.monotonic() - started
    return times


def _flush_summaries(controller) -> None:
    for manager in {id(m): m for m in (controller.summary_manager, controller.eval_summary_manager) if m}.values():
        manager.flush()


def _say_start(start: int, total: int, model_dir: str, init: dict, echo) -> None:
    if start >= total:
        echo(f"already trained: step {start} >= --steps {total} in {model_dir}; raise --steps to train on")
    elif start:
        echo(f"resuming from step {start} (latest checkpoint in {model_dir})")
    else:
        echo(f"starting from {_describe(init)}")


def _train_and_evaluate(controller, global_step, total: int, interval: int, validation_steps: int,
                        evals: _Evaluations, stopper: EarlyStopping, echo) -> bool:
    """Train to `total`, evaluating every `interval` steps and at the end; True when stopped early."""
    step = int(global_step.numpy())
    while step < total:
        controller.train(steps=min(total, (step // interval + 1) * interval))
        step = int(global_step.numpy())
        t_eval = time.monotonic()
        logs = evals.record(controller.evaluate(steps=validation_steps), time.monotonic() - t_eval, step)
        if stopper.update(logs.get(BEST_METRIC, float("nan"))) and step < total:
            echo(f"early stopping at step {step}: mAP@0.5 has not improved for {stopper.stale} evaluations")
            return True
    return False


def _budget_config(budget: TimeBudget, total: int):
    """The effective config of a budgeted run of `total` steps: its schedule and evaluation interval."""
    return budget.configure(total, **({} if budget.eval_interval else {"eval_interval": budget_eval_interval(total)}))


def _train_to_budget(controller, global_step, clock: BudgetRun, planned, progress: Progress, validation_steps: int,
                     evals: _Evaluations, stopper: EarlyStopping, echo) -> bool:
    """Train to the budget's total, evaluating and re-planning on the way (`budget.py`); True when stopped early."""
    step, evaluated_at = int(global_step.numpy()), None
    while step < clock.total:
        stop, evaluate = clock.next_stop(step)
        started = time.monotonic()
        controller.train(steps=stop)
        done = int(global_step.numpy())
        clock.trained(done - step, time.monotonic() - started)
        step = done
        if evaluate:
            started = time.monotonic()
            logs = controller.evaluate(steps=validation_steps)
            clock.evaluated(time.monotonic() - started)
            logs, evaluated_at = evals.record(logs, clock.eval_seconds[-1], step), step
            if stopper.update(logs.get(BEST_METRIC, float("nan"))) and step < clock.total:
                echo(f"early stopping at step {step}: mAP@0.5 has not improved for {stopper.stale} evaluations")
                return True
        if step < clock.total:
            planned.assign(clock.replan(step))
            progress.total = clock.total
    if evaluated_at != step:  # the time ran out between evaluations: the final model is still scored
        started = time.monotonic()
        evals.record(controller.evaluate(steps=validation_steps), time.monotonic() - started, step)
    return False


def _result(config, model_dir: str, init: dict, start: int, step: int, progress: Progress, evals: _Evaluations,
            stopped_early: bool, t0: float) -> dict:
    """The run's result (train_result.json without the loss curve); best.json written when there is one."""
    best = _read_best(model_dir)
    if best is not None:
        _write_json(f"{model_dir}/best.json", best)
    rates = progress.rates[1:] or progress.rates
    return {
        "step": step,
        "start_step": start,
        "loss": progress.losses[-1][1] if progress.losses else evals.last.get("total_loss"),
        "losses": progress.losses,
        "metrics": evals.last,
        "best": best,
        "model_dir": model_dir,
        "steps_per_second": (sum(rates) / len(rates)) if rates else None,
        "eval_seconds": evals.seconds,
        "evaluations": evals.history,
        "wall_seconds": time.monotonic() - t0,
        "stopped_early": stopped_early,
        "image_size": int(config.task.model.input_size[0]),
        "precision": config.runtime.mixed_precision_dtype,
        "strategy": config.runtime.distribution_strategy,
        "init": init,
    }


def _describe(init: dict) -> str:
    if not init.get("checkpoint"):
        return "random weights (--init-checkpoint none)"
    what = "the preset's pretrained checkpoint" if init.get("source") == "default" else "checkpoint"
    return f"{what} {init['checkpoint']} (restoring: {init.get('modules')})"


def _read_best(model_dir: str) -> dict | None:
    path = f"{model_dir}/{BEST_SUBDIR}/info.json"
    if not tfio.exists(path):
        return None
    info = json.loads(tfio.read_text(path))
    latest = tfio.latest_checkpoint(f"{model_dir}/{BEST_SUBDIR}")
    return {
        "step": int(info.get("best_ckpt_global_step", -1)),
        "metric": BEST_METRIC,
        "value": info.get(BEST_METRIC),
        "mAP": info.get("AP"),
        "mAP@0.5": info.get("AP50"),
        "checkpoint": latest,
    }
