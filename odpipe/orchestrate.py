"""Compile, run, submit and schedule the training pipeline.

- `odpipe compile [-o pipeline.yaml] [--image IMG] [--trainer-image IMG]`: KFP v2 IR YAML; the
  component images are chosen here (defaults `odpipe:VERSION`, `odpipe-gpu:VERSION`), never read
  from the environment. The YAML holds no project, credentials or bucket.
- `odpipe run --annotations DIR --images DIR [--work-dir DIR] [parameters]`: compiles the pipeline
  and runs that compiled spec with the kfp local runner (`SubprocessRunner(use_venv=False)`: every
  lightweight component runs in this Python environment), prints each task's status, then the
  metrics and where the export and report are.
- `odpipe submit`: to Vertex AI Pipelines (`--vertex --project P --region R --pipeline-root gs://...`)
  through google-cloud-aiplatform, or to a Kubeflow Pipelines endpoint (`--kfp-host URL`) through
  `kfp.Client`.
- `odpipe schedule --cron "EXPR"`: Vertex pipeline-job schedule, or Kubeflow recurring run.

Cron expressions are the standard 5 fields ("0 3 * * 1" = Mondays 03:00, optionally prefixed with
"TZ=Area/City " on Vertex). Kubeflow's scheduler takes 6 fields (seconds first), so a 5-field
expression gets "0 " prepended for Kubeflow.

kfp, aiplatform and TensorFlow are imported only when a command needs them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import tempfile
import warnings
from typing import Any, Callable

from odpipe import storage
from odpipe.errors import UserError, first_line

PIPELINE_YAML = "pipeline.yaml"
DEFAULT_WORK_DIR = "odpipe-work"

# Pipeline parameters exposed as CLI flags: (flag, parameter name, type, help). Flags left unset are
# not sent, so the pipeline's own defaults apply.
PARAMETERS: list[tuple[str, str, Any, str]] = [
    ("--eval-fraction", "eval_fraction", float, "fraction of images held out for evaluation (default 0.2)"),
    ("--seed", "seed", int, "seed of the train/eval split (default 0)"),
    ("--existing-label-map", "existing_label_map", str, "label map of the previous model, to keep class ids stable"),
    ("--model", "model", str, "model preset or Model Garden experiment (default retinanet-mobilenetv2)"),
    ("--steps", "steps", int, "training steps (default: the preset's)"),
    ("--batch-size", "batch_size", int, "global batch size (default: the preset's)"),
    ("--image-size", "image_size", int, "input size in pixels (default: the preset's)"),
    ("--init-checkpoint", "init_checkpoint", str, "checkpoint to initialise from"),
    ("--config", "config_overrides", str, "Model Garden config overrides (YAML file), applied strictly"),
    ("--min-map", "min_map", float, "bless the model only if mAP (0.5:0.95) >= this"),
    ("--baseline", "baseline", str, "metrics.json of the current model; bless only if not worse"),
    ("--publish-to", "publish_to", str, "also copy a blessed export to this folder (e.g. gs://B/models/current)"),
    ("--beam-runner", "beam_runner", str, "Beam runner of the TFRecord stage (DirectRunner, DataflowRunner)"),
    ("--shards", "shards", int, "TFRecord shards per side (default: sized from the data)"),
    ("--accelerator-type", "accelerator_type", str, "trainer accelerator on Vertex/Kubeflow (default NVIDIA_TESLA_T4)"),
    ("--accelerator-count", "accelerator_count", int, "number of trainer accelerators (default 1)"),
]


# ---------------------------------------------------------------------------------------------
# compile


def compile_pipeline(
    output: str = PIPELINE_YAML,
    image: str | None = None,
    trainer_image: str | None = None,
    trainer_memory: str = "32G",
    trainer_cpu: str = "8",
) -> str:
    """Compiles the training pipeline to KFP v2 IR YAML at `output` (local path); returns it."""
    from kfp import compiler

    from pipelines.training import build_pipeline

    pipeline = build_pipeline(image, trainer_image, trainer_memory=trainer_memory, trainer_cpu=trainer_cpu)
    parent = os.path.dirname(os.path.abspath(output))
    os.makedirs(parent, exist_ok=True)
    compiler.Compiler().compile(pipeline, output)
    return output


def _add_image_arguments(parser: argparse.ArgumentParser) -> None:
    from components.stages import DEFAULT_IMAGE, DEFAULT_TRAINER_IMAGE

    parser.add_argument("--image", default=None, help=f"CPU component image (default {DEFAULT_IMAGE})")
    parser.add_argument("--trainer-image", default=None, help=f"GPU trainer image (default {DEFAULT_TRAINER_IMAGE})")
    parser.add_argument("--trainer-memory", default="32G", help="trainer memory limit (default 32G)")
    parser.add_argument("--trainer-cpu", default="8", help="trainer CPU limit (default 8)")


def add_compile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default=PIPELINE_YAML, help="output YAML (default pipeline.yaml)")
    _add_image_arguments(parser)


def run_compile(args: argparse.Namespace) -> int:
    path = compile_pipeline(args.output, args.image, args.trainer_image, args.trainer_memory, args.trainer_cpu)
    print(f"compiled pipeline -> {path}")
    return 0


# ---------------------------------------------------------------------------------------------
# pipeline parameters shared by run / submit / schedule


def _add_parameter_arguments(parser: argparse.ArgumentParser, required_inputs: bool = True) -> None:
    group = parser.add_argument_group("pipeline parameters")
    group.add_argument("--annotations", required=required_inputs, help="folder of labelImg XML files (local or gs://)")
    group.add_argument("--images", required=required_inputs, help="folder of the images the XML files name")
    group.add_argument("--strict", action="store_true", default=None, help="fail on annotation warnings")
    group.add_argument("--no-tflite", dest="tflite", action="store_false", default=None, help="skip the TFLite export")
    group.add_argument(
        "--beam-arg", dest="beam_args", action="append", default=None, metavar="OPTION",
        help="extra Beam option for the TFRecord stage, e.g. --beam-arg=--region=europe-west4 (repeatable)",
    )
    for flag, name, kind, help_text in PARAMETERS:
        group.add_argument(flag, dest=name, type=kind, default=None, help=help_text)
    group.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE",
        help="any other pipeline parameter (VALUE parsed as JSON when it can be)",
    )


def pipeline_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline arguments given on the command line (unset flags are left to the pipeline)."""
    params: dict[str, Any] = {}
    for name in ("annotations", "images"):
        value = getattr(args, name, None)
        if value:
            params[name] = value if storage.is_remote(value) else os.path.abspath(value)
    for name in ("strict", "tflite", "beam_args"):
        if getattr(args, name, None) is not None:
            params[name] = getattr(args, name)
    for _, name, _, _ in PARAMETERS:
        if getattr(args, name, None) is not None:
            params[name] = getattr(args, name)
    for path_param in ("existing_label_map", "config_overrides", "baseline", "init_checkpoint", "publish_to"):
        value = params.get(path_param)
        if value and not storage.is_remote(value) and getattr(args, "command", "") == "run":
            params[path_param] = os.path.abspath(value)
    for item in getattr(args, "param", []) or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UserError(f"--param {item!r}: expected NAME=VALUE, e.g. --param steps=500")
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value
    return params


def check_parameters(params: dict[str, Any]) -> None:
    """Refuse names the pipeline does not have, before anything is submitted."""
    import inspect

    from pipelines.training import build_pipeline as build

    known = set(inspect.signature(build().pipeline_func).parameters)
    unknown = sorted(set(params) - known)
    if unknown:
        raise UserError(
            f"unknown pipeline parameter(s) {', '.join(unknown)}; the pipeline takes: {', '.join(sorted(known))}"
        )
    for name in ("annotations", "images"):
        if name not in params:
            raise UserError(f"missing --{name}: the pipeline needs the {name} folder (local path or gs:// URI)")


# ---------------------------------------------------------------------------------------------
# run locally


TASK_ORDER = ["annotations-to-csv", "split", "label-map", "records-train", "records-eval", "train", "export", "evaluate", "publish"]


def _task_dirs(spec: dict) -> dict[str, str]:
    """Display name -> local task folder name, for every container task of the compiled spec."""
    dirs: dict[str, str] = {}
    components = spec.get("components", {})

    def walk(tasks: dict) -> None:
        for name, task in tasks.items():
            ref = task["componentRef"]["name"]
            display = task.get("taskInfo", {}).get("name", name)
            dag = components.get(ref, {}).get("dag")
            if dag:
                walk(dag.get("tasks", {}))
            else:
                dirs[display] = ref[len("comp-"):]

    walk(spec["root"]["dag"]["tasks"])
    return dirs


def run_locally(
    parameters: dict[str, Any],
    work_dir: str = DEFAULT_WORK_DIR,
    image: str | None = None,
    trainer_image: str | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Compiles the pipeline into `work_dir` and runs the compiled spec with the kfp local runner.

    Returns a summary: {"run_dir", "pipeline", "tasks": {display name: status}, "metrics",
    "blessed", "export" (None when the gate skipped it), "report", "records", "model", ...}.
    A failing task raises UserError naming the task (its log is above it on stdout).
    """
    import yaml
    from google.protobuf import json_format
    from kfp import local
    from kfp.local import pipeline_orchestrator
    from kfp.pipeline_spec import pipeline_spec_pb2

    check_parameters(parameters)
    for name in ("annotations", "images"):
        value = parameters[name]
        if not storage.is_remote(value) and not os.path.isdir(value):
            raise UserError(f"--{name} {value}: folder not found; pass the folder of your labelImg {name}")
    work_dir = os.path.abspath(work_dir)
    os.makedirs(work_dir, exist_ok=True)
    pipeline_yaml = compile_pipeline(os.path.join(work_dir, PIPELINE_YAML), image, trainer_image)
    with open(pipeline_yaml, encoding="utf-8") as f:
        spec_dict = yaml.safe_load(f)
    spec = json_format.ParseDict(spec_dict, pipeline_spec_pb2.PipelineSpec())
    runs_root = os.path.join(work_dir, "runs")
    os.makedirs(runs_root, exist_ok=True)
    before = set(os.listdir(runs_root))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=runs_root, raise_on_error=True)
    echo(f"odpipe run: pipeline {pipeline_yaml}, outputs under {runs_root}")
    error = None
    with warnings.catch_warnings():
        # The image names are for the cluster; locally every task runs in this environment.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        # Resources (accelerators, memory) are for the cluster; the local runner says it ignores them.
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        try:
            pipeline_orchestrator.run_local_pipeline(spec, parameters)
        except RuntimeError as err:
            error = re.sub(r"\x1b\[[0-9;]*m", "", first_line(err))
    new = sorted(set(os.listdir(runs_root)) - before)
    run_dir = os.path.join(runs_root, new[-1]) if new else None
    summary = collect_outputs(run_dir, _task_dirs(spec_dict)) if run_dir else {"tasks": {}}
    summary.update({"run_dir": run_dir, "pipeline": pipeline_yaml})
    echo("")
    echo("task status:")
    for name, state in summary["tasks"].items():
        echo(f"  {name:<20} {state}")
    if error:
        raise UserError(f"local pipeline run failed: {error}; see that task's log above (outputs so far: {run_dir})")
    return summary


def collect_outputs(run_dir: str, task_dirs: dict[str, str]) -> dict[str, Any]:
    """Where a local run put each artifact, and the evaluation metrics."""

    def out(task: str, name: str) -> str | None:
        path = os.path.join(run_dir, task_dirs.get(task, task), name)
        return path if os.path.exists(path) else None

    metrics_path = out("evaluate", os.path.join("evaluation", "metrics.json"))
    metrics = json.loads(storage.read_text(metrics_path)) if metrics_path else None
    order = {name: i for i, name in enumerate(TASK_ORDER)}
    tasks = {}
    for display in sorted(task_dirs, key=lambda name: (order.get(name, len(order)), name)):
        if os.path.isfile(os.path.join(run_dir, task_dirs[display], "executor_output.json")):
            tasks[display] = "done"
        elif os.path.isdir(os.path.join(run_dir, task_dirs[display])):
            tasks[display] = "failed"
        elif display == "publish" and metrics is not None and not metrics.get("blessed"):
            tasks[display] = "skipped (model not blessed)"
        else:
            tasks[display] = "not run"
    report = out("evaluate", os.path.join("evaluation", "report.html"))
    return {
        "tasks": tasks,
        "labels": out("annotations-to-csv", "labels"),
        "label_map": out("label-map", "label_map"),
        "records": {"train": out("records-train", "records"), "eval": out("records-eval", "records")},
        "model": out("train", "model"),
        "candidate_export": out("export", "exported"),
        "evaluation": out("evaluate", "evaluation"),
        "report": report,
        "metrics": metrics,
        "blessed": None if metrics is None else bool(metrics.get("blessed")),
        "export": out("publish", "published"),
    }


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work-dir", default=DEFAULT_WORK_DIR, help=f"local outputs (default ./{DEFAULT_WORK_DIR})")
    _add_parameter_arguments(parser)


def print_result(summary: dict[str, Any], echo: Callable[[str], None] = print) -> None:
    metrics = summary.get("metrics") or {}
    echo("")
    if metrics:
        shown = {k: metrics[k] for k in ("mAP", "mAP@0.5", "mAP@0.75", "recall") if k in metrics}
        echo("metrics: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()))
        reasons = (metrics.get("blessing") or {}).get("reasons")  # metrics.json of `odpipe evaluate`
        echo(f"blessed: {summary.get('blessed')}" + (f" ({'; '.join(map(str, reasons))})" if isinstance(reasons, list) and reasons else ""))
    if summary.get("report"):
        echo(f"report:  {summary['report']}")
    if summary.get("export"):
        echo(f"export:  {summary['export']}")
    else:
        echo(f"export:  none published (not blessed); candidate export at {summary.get('candidate_export')}")
    echo(f"model:   {summary.get('model')}")


def run_run(args: argparse.Namespace) -> int:
    summary = run_locally(pipeline_parameters(args), args.work_dir)
    print_result(summary)
    return 0


# ---------------------------------------------------------------------------------------------
# submit / schedule


def _cron_fields(cron: str) -> tuple[str, list[str]]:
    """(timezone prefix, fields) of a cron expression."""
    prefix = ""
    text = cron.strip()
    match = re.match(r"^((?:CRON_)?TZ=\S+)\s+(.*)$", text)
    if match:
        prefix, text = match.group(1), match.group(2)
    return prefix, text.split()


def vertex_cron(cron: str) -> str:
    prefix, fields = _cron_fields(cron)
    if len(fields) != 5:
        raise UserError(f'--cron "{cron}": Vertex AI schedules take 5 fields (minute hour day month weekday), e.g. "0 3 * * 1"')
    return " ".join(([prefix] if prefix else []) + fields)


def kubeflow_cron(cron: str) -> str:
    prefix, fields = _cron_fields(cron)
    if prefix:
        raise UserError(f'--cron "{cron}": Kubeflow recurring runs have no time-zone prefix; drop "{prefix}" (the cluster\'s time zone applies)')
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise UserError(f'--cron "{cron}": expected 5 fields (minute hour day month weekday), e.g. "0 3 * * 1"')
    return " ".join(fields)


def _display_name(name: str | None) -> str:
    from pipelines.training import PIPELINE_NAME

    return name or f"{PIPELINE_NAME}-{datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%d-%H%M%S')}"


def vertex_job(
    pipeline_yaml: str,
    project: str,
    region: str,
    pipeline_root: str,
    parameters: dict[str, Any],
    display_name: str | None = None,
    enable_caching: bool | None = None,
    labels: dict[str, str] | None = None,
    credentials=None,
):
    """An `aiplatform.PipelineJob` for the compiled pipeline (not submitted yet)."""
    from google.cloud import aiplatform

    if not pipeline_root.startswith("gs://"):
        raise UserError(f"--pipeline-root {pipeline_root}: Vertex AI needs a gs:// folder for pipeline outputs, e.g. gs://BUCKET/odpipe")
    return aiplatform.PipelineJob(
        display_name=_display_name(display_name),
        template_path=pipeline_yaml,
        pipeline_root=pipeline_root,
        parameter_values=parameters,
        enable_caching=enable_caching,
        labels=labels,
        project=project,
        location=region,
        credentials=credentials,
    )


def submit_vertex(pipeline_yaml: str, project: str, region: str, pipeline_root: str, parameters: dict[str, Any],
                  service_account: str | None = None, **options):
    """Submits a Vertex AI pipeline job; returns the `PipelineJob`."""
    job = vertex_job(pipeline_yaml, project, region, pipeline_root, parameters, **options)
    job.submit(service_account=service_account)
    return job


def schedule_vertex(pipeline_yaml: str, project: str, region: str, pipeline_root: str, parameters: dict[str, Any],
                    cron: str, service_account: str | None = None, max_concurrent_runs: int = 1,
                    max_runs: int | None = None, **options):
    """Creates a Vertex AI pipeline-job schedule; returns the `PipelineJobSchedule`."""
    job = vertex_job(pipeline_yaml, project, region, pipeline_root, parameters, **options)
    return job.create_schedule(
        cron=vertex_cron(cron),
        display_name=_display_name(options.get("display_name")) + "-schedule",
        max_concurrent_run_count=max_concurrent_runs,
        max_run_count=max_runs,
        service_account=service_account,
    )


def kfp_client(host: str, namespace: str | None = None, existing_token: str | None = None):
    import kfp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(host=host, namespace=namespace or "kubeflow", existing_token=existing_token)


def submit_kubeflow(pipeline_yaml: str, host: str, parameters: dict[str, Any], experiment: str = "odpipe",
                    run_name: str | None = None, namespace: str | None = None, pipeline_root: str | None = None,
                    enable_caching: bool | None = None, service_account: str | None = None,
                    existing_token: str | None = None):
    """Creates a Kubeflow Pipelines run; returns kfp's `RunPipelineResult`."""
    client = kfp_client(host, namespace, existing_token)
    return client.create_run_from_pipeline_package(
        pipeline_yaml,
        arguments=parameters,
        run_name=_display_name(run_name),
        experiment_name=experiment,
        namespace=namespace,
        pipeline_root=pipeline_root,
        enable_caching=enable_caching,
        service_account=service_account,
    )


def schedule_kubeflow(pipeline_yaml: str, host: str, parameters: dict[str, Any], cron: str,
                      experiment: str = "odpipe", run_name: str | None = None, namespace: str | None = None,
                      pipeline_root: str | None = None, enable_caching: bool | None = None,
                      service_account: str | None = None, max_concurrent_runs: int = 1,
                      existing_token: str | None = None):
    """Creates a Kubeflow recurring run; returns kfp's `V2beta1RecurringRun`."""
    client = kfp_client(host, namespace, existing_token)
    exp = client.create_experiment(name=experiment, namespace=namespace)
    return client.create_recurring_run(
        experiment_id=exp.experiment_id,
        job_name=_display_name(run_name),
        cron_expression=kubeflow_cron(cron),
        max_concurrency=max_concurrent_runs,
        no_catchup=True,
        params=parameters,
        pipeline_package_path=pipeline_yaml,
        pipeline_root=pipeline_root,
        enable_caching=enable_caching,
        service_account=service_account,
    )


def _add_target_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_argument_group("target (one of)")
    target.add_argument("--vertex", action="store_true", help="Vertex AI Pipelines (needs --project, --region, --pipeline-root)")
    target.add_argument("--kfp-host", help="Kubeflow Pipelines endpoint, e.g. http://localhost:8080")
    vertex = parser.add_argument_group("Vertex AI")
    vertex.add_argument("--project", help="Google Cloud project id")
    vertex.add_argument("--region", help="Vertex AI region, e.g. us-central1")
    vertex.add_argument("--service-account", help="service account the pipeline runs as")
    vertex.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="Vertex job label (repeatable)")
    kubeflow = parser.add_argument_group("Kubeflow")
    kubeflow.add_argument("--experiment", default="odpipe", help="Kubeflow experiment (default odpipe)")
    kubeflow.add_argument("--namespace", help="Kubeflow namespace (multi-user deployments)")
    kubeflow.add_argument("--token", help="bearer token for the Kubeflow endpoint")
    common = parser.add_argument_group("both")
    common.add_argument("--pipeline-root", help="where task outputs go (gs://... on Vertex; the cluster default on Kubeflow)")
    common.add_argument("--pipeline", help="compiled pipeline YAML to submit (default: compile one now)")
    common.add_argument("--name", help="run / schedule display name")
    common.add_argument("--no-cache", dest="enable_caching", action="store_const", const=False, default=None,
                        help="re-run every task instead of reusing cached results")
    _add_image_arguments(parser)
    _add_parameter_arguments(parser, required_inputs=False)


def add_submit_arguments(parser: argparse.ArgumentParser) -> None:
    _add_target_arguments(parser)


def add_schedule_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cron", required=True, help='cron schedule, 5 fields, e.g. "0 3 * * 1" (Mondays 03:00)')
    parser.add_argument("--max-concurrent-runs", type=int, default=1, help="runs allowed at once (default 1)")
    parser.add_argument("--max-runs", type=int, default=None, help="stop after this many runs (Vertex only)")
    _add_target_arguments(parser)


def _prepared(args: argparse.Namespace, scratch: str) -> tuple[str, dict[str, Any], str]:
    """(target, parameters, pipeline YAML) for submit/schedule; compiles into `scratch` unless --pipeline is given."""
    if bool(args.vertex) == bool(args.kfp_host):
        raise UserError("choose one target: --vertex (with --project, --region, --pipeline-root) or --kfp-host URL")
    if args.vertex:
        missing = [f for f in ("project", "region", "pipeline_root") if not getattr(args, f)]
        if missing:
            raise UserError("--vertex needs " + ", ".join("--" + m.replace("_", "-") for m in missing) +
                            " (e.g. --project my-project --region us-central1 --pipeline-root gs://my-bucket/odpipe)")
    if getattr(args, "cron", None):
        (vertex_cron if args.vertex else kubeflow_cron)(args.cron)
    params = pipeline_parameters(args)
    check_parameters(params)
    for name in ("annotations", "images"):
        if args.vertex and not storage.is_remote(params[name]):
            raise UserError(f"--{name} {params[name]}: a cloud run cannot read local folders; upload it and pass gs://BUCKET/...")
    config = params.get("config_overrides")
    if config and not storage.is_remote(config) and os.path.isfile(config):
        # a local overrides file travels inline (the trainer takes YAML text as well as a path)
        with open(config, encoding="utf-8") as f:
            text = f.read()
        params["config_overrides"] = text if text.endswith("\n") else text + "\n"
    for name, flag in (("existing_label_map", "--existing-label-map"), ("baseline", "--baseline"),
                       ("init_checkpoint", "--init-checkpoint"), ("publish_to", "--publish-to")):
        value = params.get(name)
        if value and not storage.is_remote(value) and (args.vertex or os.path.exists(value)):
            raise UserError(f"{flag} {value}: a cloud run cannot read local files; upload it and pass gs://BUCKET/...")
    if args.pipeline:
        if not os.path.isfile(args.pipeline):
            raise UserError(f"--pipeline {args.pipeline}: file not found; compile one with `odpipe compile -o FILE`")
        pipeline_yaml = args.pipeline
    else:
        pipeline_yaml = compile_pipeline(
            os.path.join(scratch, PIPELINE_YAML),
            args.image, args.trainer_image, args.trainer_memory, args.trainer_cpu,
        )
    return ("vertex" if args.vertex else "kubeflow"), params, pipeline_yaml


def _labels(items: list[str]) -> dict[str, str] | None:
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--label {item!r}: expected KEY=VALUE")
        labels[key] = value
    return labels or None


def run_submit(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="odpipe-") as scratch:
        return _submit(args, scratch)


def _submit(args: argparse.Namespace, scratch: str) -> int:
    target, params, pipeline_yaml = _prepared(args, scratch)
    if target == "vertex":
        job = submit_vertex(
            pipeline_yaml, args.project, args.region, args.pipeline_root, params,
            service_account=args.service_account, display_name=args.name,
            enable_caching=args.enable_caching, labels=_labels(args.label),
        )
        print(f"submitted Vertex AI pipeline job {job.resource_name}")
    else:
        result = submit_kubeflow(
            pipeline_yaml, args.kfp_host, params, experiment=args.experiment, run_name=args.name,
            namespace=args.namespace, pipeline_root=args.pipeline_root, enable_caching=args.enable_caching,
            service_account=args.service_account, existing_token=args.token,
        )
        print(f"submitted Kubeflow run {result.run_id}")
    return 0


def run_schedule(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="odpipe-") as scratch:
        return _schedule(args, scratch)


def _schedule(args: argparse.Namespace, scratch: str) -> int:
    target, params, pipeline_yaml = _prepared(args, scratch)
    if target == "vertex":
        schedule = schedule_vertex(
            pipeline_yaml, args.project, args.region, args.pipeline_root, params, args.cron,
            service_account=args.service_account, max_concurrent_runs=args.max_concurrent_runs,
            max_runs=args.max_runs, display_name=args.name, enable_caching=args.enable_caching,
            labels=_labels(args.label),
        )
        print(f"created Vertex AI schedule {schedule.resource_name} ({vertex_cron(args.cron)})")
    else:
        recurring = schedule_kubeflow(
            pipeline_yaml, args.kfp_host, params, args.cron, experiment=args.experiment, run_name=args.name,
            namespace=args.namespace, pipeline_root=args.pipeline_root, enable_caching=args.enable_caching,
            service_account=args.service_account, max_concurrent_runs=args.max_concurrent_runs,
            existing_token=args.token,
        )
        print(f"created Kubeflow recurring run {recurring.recurring_run_id} ({kubeflow_cron(args.cron)})")
    return 0


# ---------------------------------------------------------------------------------------------
# publish (the gated step of the pipeline)


def publish_export(export_dir: str, destinations: list[str]) -> dict[str, Any]:
    """Copies an export directory (local or gs://) to each destination folder; returns what was copied."""
    files = storage.list_files(export_dir)
    if not files:
        raise UserError(f"{export_dir}: export folder is empty or missing; run `odpipe export` first")
    copied = sum(storage.copy_tree(export_dir, str(dest).rstrip("/"), files) for dest in destinations)
    return {"source": export_dir, "destinations": list(destinations), "files": len(files), "copied": copied}


if __name__ == "__main__":  # pragma: no cover
    from odpipe.cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
