"""`odpipe run`: the whole pipeline on this machine with the kfp local runner.

    odpipe run --annotations DIR --images DIR [--model-home DIR] [--work-dir DIR] [parameters]

The pipeline is compiled into the work dir (pipeline.yaml, for the record) and run through kfp's
public local API (`kfp.local.init` with `SubprocessRunner(use_venv=False)`, then calling the
pipeline): every lightweight component runs in this Python environment. Each task's status is
printed, then the fingerprint's verdict, the metrics (challenger and champion), and where the
report, the model home version and the export are.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import warnings
from typing import Any, Callable

from launch import docker, spec
from odpipe import storage
from odpipe.champion import Champion
from odpipe.errors import UserError, first_line
from odpipe.settings import Settings

DEFAULT_WORK_DIR = "odpipe-work"


def _task_dirs(spec_dict: dict) -> dict[str, str]:
    """Display name -> local task folder name, for every container task of the compiled spec."""
    dirs: dict[str, str] = {}
    components = spec_dict.get("components", {})

    def walk(tasks: dict) -> None:
        for name, task in tasks.items():
            ref = task["componentRef"]["name"]
            dag = components.get(ref, {}).get("dag")
            if dag:
                walk(dag.get("tasks", {}))
            else:
                dirs[task.get("taskInfo", {}).get("name", name)] = ref[len("comp-"):]

    walk(spec_dict["root"]["dag"]["tasks"])
    return dirs


def run_locally(
    parameters: dict[str, Any],
    work_dir: str = DEFAULT_WORK_DIR,
    image: str | None = None,
    trainer_image: str | None = None,
    echo: Callable[[str], None] = print,
    in_docker: bool = False,
) -> dict[str, Any]:
    """Compiles the pipeline into `work_dir` and runs it with the kfp local runner (`in_docker`:
    every task in its image, with kfp's DockerRunner; see launch/docker.py).

    Returns a summary: {"run_dir", "pipeline", "tasks": {display name: status}, "plan",
    "metrics", "blessed", "published", "export", "report", "records", "model", ...}.
    A failing task raises UserError naming the task (its log is above it on stdout).
    """
    import yaml
    from kfp import local

    check_run(parameters)
    work_dir = os.path.abspath(work_dir)
    os.makedirs(work_dir, exist_ok=True)
    pipeline_yaml = spec.compile_pipeline(os.path.join(work_dir, spec.PIPELINE_YAML), image, trainer_image, target="local")
    with open(pipeline_yaml, encoding="utf-8") as f:
        spec_dict = yaml.safe_load(f)
    runs_root = os.path.join(work_dir, "runs")
    os.makedirs(runs_root, exist_ok=True)
    before = set(os.listdir(runs_root))
    if in_docker:
        runner, failures = docker.prepare(spec_dict, parameters)
    else:
        runner, failures = local.SubprocessRunner(use_venv=False), (RuntimeError,)
    local.init(runner=runner, pipeline_root=runs_root, raise_on_error=True)
    echo(f"odpipe run: pipeline {pipeline_yaml}, outputs under {runs_root}")
    error = None
    with warnings.catch_warnings():
        # The image names are for the cluster; locally every task runs in this environment.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        # Resources (accelerators, memory) and retries are for the cluster; the local runner ignores them.
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        warnings.filterwarnings("ignore", message=".*not supported by the local runner.*")
        try:
            spec.build(image, trainer_image, target="local")(**parameters)
        except failures as err:
            error = re.sub(r"\x1b\[[0-9;]*m", "", first_line(err))
    new = sorted(set(os.listdir(runs_root)) - before)
    run_dir = os.path.join(runs_root, new[-1]) if new else None
    summary = collect_outputs(run_dir, _task_dirs(spec_dict), spec.task_order(spec_dict)) if run_dir else {"tasks": {}}
    summary.update({"run_dir": run_dir, "pipeline": pipeline_yaml})
    echo("")
    echo("task status:")
    for name, state in summary["tasks"].items():
        echo(f"  {name:<20} {state}")
    if error:
        failed = [name for name, state in summary["tasks"].items() if state == "failed"]
        if failed:  # name the task itself (kfp's message names the condition around it)
            error = f"task {', '.join(repr(name) for name in failed)} failed"
        raise UserError(f"local pipeline run failed: {error}; see that task's log above (outputs so far: {run_dir})")
    if in_docker and run_dir:  # kfp may read a removed container's exit code as success
        docker.check_task_outputs(run_dir, _task_dirs(spec_dict), spec_dict)
    return summary


def check_run(parameters: dict[str, Any]) -> None:
    """Everything that can be checked before the first task: parameter names, the input folders,
    and the settings (numbers in range, files readable, the model home writable, the preset or
    experiment known, the overrides applied, the start checkpoint reachable). One line, in seconds."""
    spec.check_parameters(parameters, "local")
    for name in spec.INPUT_FOLDERS:
        value = parameters[name]
        if not storage.is_dir(value):
            raise UserError(f"--{name} {value}: folder not found; pass the folder of your labelImg {name}")
    settings = Settings.from_params(parameters)
    settings.check_numbers()
    settings.check_files()
    warm = Champion.of_home(settings.model_home).checkpoint if settings.warm_start and settings.model_home else ""
    settings.check_model(warm)


def _read_json(path: str | None) -> Any:
    return json.loads(storage.read_text(path)) if path else None


def collect_outputs(run_dir: str, task_dirs: dict[str, str], order: list[str]) -> dict[str, Any]:
    """Where a local run put each artifact, the fingerprint's verdict and the evaluation metrics."""

    def out(task: str, name: str) -> str | None:
        path = os.path.join(run_dir, task_dirs.get(task, task), name)
        return path if os.path.exists(path) else None

    plan = None
    verdict = (_read_json(out("fingerprint", "executor_output.json")) or {}).get("parameterValues")
    if verdict is not None:  # the verdict is the task's Output; the plan and the champion are artifacts beside it
        plan = {**(_read_json(out("fingerprint", "plan")) or {}), "changed": verdict.get("Output"),
                "champion": _read_json(out("fingerprint", "champion"))}
    metrics = _read_json(out("evaluate", os.path.join("evaluation", "metrics.json")))
    rank = {name: i for i, name in enumerate(order)}
    tasks = {}
    for display in sorted(task_dirs, key=lambda name: (rank.get(name, len(rank)), name)):
        if os.path.isfile(os.path.join(run_dir, task_dirs[display], "executor_output.json")):
            tasks[display] = "done"
        elif os.path.isdir(os.path.join(run_dir, task_dirs[display])):
            tasks[display] = "failed"
        elif plan is not None and plan.get("changed") is False:
            tasks[display] = "skipped (data unchanged)"
        elif display in ("publish", "register") and metrics is not None and not metrics.get("blessed"):
            tasks[display] = "skipped (model not blessed)"
        elif display == "register" and "publish" in tasks and tasks["publish"] == "done":
            tasks[display] = "skipped (no registry model)"
        else:
            tasks[display] = "not run"
    published = out("publish", "published")
    record = None
    if published and os.path.isfile(published):
        record = _read_json(published)
    return {
        "tasks": tasks,
        "plan": plan,
        "labels": out("annotations-to-csv", "labels"),
        "label_map": out("label-map", "label_map"),
        "records": {"train": out("records-train", "records"), "eval": out("records-eval", "records")},
        "model": out("train", "model"),
        "candidate_export": out("export", "exported"),
        "evaluation": out("evaluate", "evaluation"),
        "report": out("evaluate", os.path.join("evaluation", "report.html")),
        "data_report": out("data-report", os.path.join("data_stats", "data_report.html")),
        "metrics": metrics,
        "blessed": None if metrics is None else bool(metrics.get("blessed")),
        "published": record,
        "export": (storage.join(record["home"], record["path"], "export") if record else published),
    }


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work-dir", default=DEFAULT_WORK_DIR, help=f"local outputs (default ./{DEFAULT_WORK_DIR})")
    docker.add_docker_arguments(parser)
    spec.add_parameter_arguments(parser, targets=("local",))


def _num(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def print_result(summary: dict[str, Any], echo: Callable[[str], None] = print) -> None:
    plan = summary.get("plan") or {}
    metrics = summary.get("metrics") or {}
    echo("")
    if plan.get("message"):
        echo(f"data:    {plan['message']}")
    if plan.get("changed") is False:
        return
    if metrics:
        shown = {k: metrics[k] for k in ("mAP", "mAP@0.5", "mAP@0.75", "recall") if k in metrics}
        echo("metrics: " + ", ".join(f"{k} {_num(v)}" for k, v in shown.items()))
        champion = metrics.get("champion")
        if champion:
            echo(f"champion: version {champion.get('version')}: mAP {_num(champion.get('mAP'))}, "
                 f"mAP@0.5 {_num(champion.get('mAP@0.5'))} on the same eval records")
        reasons = (metrics.get("blessing") or {}).get("reasons")
        echo(f"blessed: {summary.get('blessed')}" + (f" ({'; '.join(map(str, reasons))})" if reasons else ""))
    if summary.get("data_report"):
        echo(f"data report: {summary['data_report']}")
    if summary.get("report"):
        echo(f"report:  {summary['report']}")
    record = summary.get("published")
    if record:
        echo(f"published: version {record['version']} in {record['home']} (now current)")
    if summary.get("export"):
        echo(f"export:  {summary['export']}")
    else:
        echo(f"export:  none published (not blessed); candidate export at {summary.get('candidate_export')}")
    echo(f"model:   {summary.get('model')}")


def run_run(args: argparse.Namespace) -> int:
    summary = run_locally(spec.pipeline_parameters(args, local=True), args.work_dir, args.image, args.trainer_image,
                          in_docker=args.docker)
    print_result(summary)
    return 0
