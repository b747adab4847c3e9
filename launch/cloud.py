"""`odpipe submit` and `odpipe schedule`: the pipeline on Vertex AI Pipelines or Kubeflow.

    odpipe submit   --vertex --project P --region R --pipeline-root gs://B/root [--wait] PARAMETERS
    odpipe submit   --kfp-host URL [--wait] PARAMETERS
    odpipe schedule --cron "0 3 * * 1" (--vertex ... | --kfp-host URL) PARAMETERS
    odpipe schedule list|pause|resume|delete [SCHEDULE] (--vertex ... | --kfp-host URL)

Caching stays on (the fingerprint task decides what reruns); `--no-cache` reruns every task.
Images must name a registry (`--image REGISTRY/odpipe:VERSION`): a cluster cannot pull the
placeholder `odpipe:VERSION`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Any

from launch import kubeflow, schedules, spec, vertex
from odpipe import storage
from odpipe.errors import UserError


def _add_target_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_argument_group("target (one of)")
    target.add_argument("--vertex", action="store_true", help="Vertex AI Pipelines (needs --project, --region, --pipeline-root)")
    target.add_argument("--kfp-host", help="Kubeflow Pipelines endpoint, e.g. http://localhost:8080")
    vx = parser.add_argument_group("Vertex AI")
    vx.add_argument("--project", help="Google Cloud project id")
    vx.add_argument("--region", help="Vertex AI region, e.g. us-central1")
    vx.add_argument("--service-account", help="service account the pipeline runs as")
    vx.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="Vertex job label (repeatable)")
    vx.add_argument("--experiment", help="experiment the run is filed under: a Vertex AI Experiment (none unless "
                                        "given), a Kubeflow experiment (default odpipe)")
    kf = parser.add_argument_group("Kubeflow")
    kf.add_argument("--namespace", help="Kubeflow namespace (multi-user deployments)")
    kf.add_argument("--token", help="bearer token for the Kubeflow endpoint")
    common = parser.add_argument_group("both")
    common.add_argument("--pipeline-root", help="where task outputs go (gs://... on Vertex; the cluster default on Kubeflow)")
    common.add_argument("--pipeline", help="compiled pipeline YAML to submit (default: compile one now)")
    common.add_argument("--name", help="run / schedule display name")
    common.add_argument("--no-cache", dest="enable_caching", action="store_const", const=False, default=None,
                        help="re-run every task instead of reusing cached results")
    spec.add_image_arguments(parser)
    spec.add_parameter_arguments(parser, required_inputs=False)


def add_submit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="follow the run to its end; exit 1 if it failed")
    _add_target_arguments(parser)


def add_schedule_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=("create", *schedules.ACTIONS), default="create",
                        help="create (default) a schedule, or list / pause / resume / delete the ones odpipe made")
    parser.add_argument("schedule_id", nargs="?", metavar="SCHEDULE",
                        help="the schedule to pause / resume / delete (an id that `odpipe schedule list` shows)")
    parser.add_argument("--cron", help='cron schedule, 5 fields, e.g. "0 3 * * 1" (Mondays 03:00); needed to create')
    parser.add_argument("--max-concurrent-runs", type=int, default=1, help="runs allowed at once (default 1)")
    parser.add_argument("--max-runs", type=int, default=None, help="stop after this many runs (Vertex only)")
    _add_target_arguments(parser)


def check_image(flag: str, image: str | None, default: str) -> None:
    """A cluster pulls images from a registry: refuse a name without a registry host."""
    name = image or default
    host = name.split("/", 1)[0] if "/" in name else ""
    if not host or not ("." in host or ":" in host or host == "localhost"):
        raise UserError(f"{flag} {name}: a cluster cannot pull an image without a registry host; build and push the "
                        f"images (make images REGISTRY=...) and pass {flag} REGISTRY/{name.rsplit('/', 1)[-1]}, "
                        "e.g. us-docker.pkg.dev/PROJECT/odpipe/odpipe:VERSION")


def _prepared(args: argparse.Namespace, scratch: str) -> tuple[str, dict[str, Any], str]:
    """(target, parameters, pipeline YAML) for submit/schedule; compiles into `scratch` unless --pipeline is given."""
    from components.stages import DEFAULT_IMAGE, DEFAULT_TRAINER_IMAGE

    if bool(args.vertex) == bool(args.kfp_host):
        raise UserError("choose one target: --vertex (with --project, --region, --pipeline-root) or --kfp-host URL")
    if args.vertex:
        missing = [f for f in ("project", "region", "pipeline_root") if not getattr(args, f)]
        if missing:
            raise UserError("--vertex needs " + ", ".join("--" + m.replace("_", "-") for m in missing) +
                            " (e.g. --project my-project --region us-central1 --pipeline-root gs://my-bucket/odpipe)")
        if not args.pipeline_root.startswith("gs://"):
            raise UserError(f"--pipeline-root {args.pipeline_root}: Vertex AI needs a gs:// folder for pipeline outputs, "
                            "e.g. gs://BUCKET/odpipe")
    target = "vertex" if args.vertex else "kubeflow"
    if getattr(args, "cron", None):
        (vertex.vertex_cron if args.vertex else kubeflow.kubeflow_cron)(args.cron)
    params = spec.pipeline_parameters(args)
    spec.check_parameters(params, target)
    for name in spec.INPUT_FOLDERS:
        if args.vertex and not storage.is_remote(params[name]):
            raise UserError(f"--{name} {params[name]}: a cloud run cannot read local folders; upload it and pass gs://BUCKET/...")
    config = params.get("config_overrides")
    if config and not storage.is_remote(config) and os.path.isfile(config):
        # a local overrides file travels inline (the trainer takes YAML text as well as a path)
        with open(config, encoding="utf-8") as f:
            text = f.read()
        params["config_overrides"] = text if text.endswith("\n") else text + "\n"
    for name in spec.PATH_PARAMETERS:
        value = params.get(name)
        if spec.is_local_path(name, value) and (args.vertex or os.path.exists(value)):
            flag = "--config" if name == "config_overrides" else "--" + name.replace("_", "-")
            raise UserError(f"{flag} {value}: a cloud run cannot read local files; upload it and pass gs://BUCKET/...")
    if args.pipeline:
        if not os.path.isfile(args.pipeline):
            raise UserError(f"--pipeline {args.pipeline}: file not found; compile one with `odpipe compile -o FILE`")
        pipeline_yaml = args.pipeline
    else:
        check_image("--image", args.image, DEFAULT_IMAGE)
        check_image("--trainer-image", args.trainer_image, DEFAULT_TRAINER_IMAGE)
        pipeline_yaml = spec.compile_pipeline(os.path.join(scratch, spec.PIPELINE_YAML), args.image,
                                              args.trainer_image, args.trainer_memory, args.trainer_cpu, target=target,
                                              image_pull_secrets=tuple(args.image_pull_secrets))
    _check_compiled_images(pipeline_yaml)
    spec.check_accelerator(target, params.get("accelerator_type") or spec.compiled_accelerator(pipeline_yaml))
    return target, params, pipeline_yaml


def _check_compiled_images(pipeline_yaml: str) -> None:
    compiled = spec.load_compiled(pipeline_yaml)[0]
    for name, executor in compiled.get("deploymentSpec", {}).get("executors", {}).items():
        image = executor.get("container", {}).get("image", "")
        flag = "--trainer-image" if name == "exec-train" else "--image"
        check_image(flag, image, image)
    # on Vertex AI the trainer image is inside the CustomJob's worker pool (the trainer-machine task's input)
    tasks = compiled.get("components", {}).get("comp-condition-1", {}).get("dag", {}).get("tasks", {})
    container = tasks.get("trainer-machine", {}).get("inputs", {}).get("parameters", {}).get("container", {})
    image = container.get("runtimeValue", {}).get("constant", {}).get("image_uri")
    if image:
        check_image("--trainer-image", image, image)


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
        target, params, pipeline_yaml = _prepared(args, scratch)
        if target == "vertex":
            job = vertex.submit_vertex(
                pipeline_yaml, args.project, args.region, args.pipeline_root, params,
                service_account=args.service_account, display_name=args.name,
                enable_caching=args.enable_caching, labels=_labels(args.label), experiment=args.experiment,
            )
            print(f"submitted Vertex AI pipeline job {job.resource_name}"
                  + (f" (experiment {args.experiment})" if args.experiment else ""))
            print(f"console: {vertex.console_url(job.resource_name)}")
            state = vertex.wait_vertex(job) if args.wait else None
            ok = state in (None, "PIPELINE_STATE_SUCCEEDED")
        else:
            result = kubeflow.submit_kubeflow(
                pipeline_yaml, args.kfp_host, params, experiment=args.experiment or "odpipe", run_name=args.name,
                namespace=args.namespace, pipeline_root=args.pipeline_root, enable_caching=args.enable_caching,
                service_account=args.service_account, existing_token=args.token,
            )
            print(f"submitted Kubeflow run {result.run_id}")
            print(f"console: {kubeflow.run_url(args.kfp_host, result.run_id)}")
            state = kubeflow.wait_kubeflow(args.kfp_host, result.run_id, args.namespace, args.token) if args.wait else None
            ok = state in (None, kubeflow.FINAL_OK)
    if state is not None:
        print(f"run finished: {state}")
    if not ok:
        print(f"odpipe submit: error: the run ended {state}; see its page above for the failing task", file=sys.stderr)
        return 1
    return 0


def run_schedule(args: argparse.Namespace) -> int:
    if args.action != "create":
        return schedules.run(args)
    if not args.cron:
        raise UserError('--cron is needed to create a schedule, e.g. --cron "0 3 * * 1" (Mondays 03:00)')
    with tempfile.TemporaryDirectory(prefix="odpipe-") as scratch:
        target, params, pipeline_yaml = _prepared(args, scratch)
        if target == "vertex":
            schedule = vertex.schedule_vertex(
                pipeline_yaml, args.project, args.region, args.pipeline_root, params, args.cron,
                service_account=args.service_account, max_concurrent_runs=args.max_concurrent_runs,
                max_runs=args.max_runs, display_name=args.name, enable_caching=args.enable_caching,
                labels=_labels(args.label),
            )
            print(f"created Vertex AI schedule {schedule.resource_name} ({vertex.vertex_cron(args.cron)})")
        else:
            recurring = kubeflow.schedule_kubeflow(
                pipeline_yaml, args.kfp_host, params, args.cron, experiment=args.experiment or "odpipe",
                run_name=args.name,
                namespace=args.namespace, pipeline_root=args.pipeline_root, enable_caching=args.enable_caching,
                service_account=args.service_account, max_concurrent_runs=args.max_concurrent_runs,
                existing_token=args.token,
            )
            print(f"created Kubeflow recurring run {recurring.recurring_run_id} ({kubeflow.kubeflow_cron(args.cron)})")
    return 0
