"""Vertex AI Pipelines: pipeline jobs and schedules, through google-cloud-aiplatform.

Cron expressions are the standard 5 fields ("0 3 * * 1" = Mondays 03:00), optionally prefixed
with "TZ=Area/City ".
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from odpipe.errors import UserError, first_line


def cron_fields(cron: str) -> tuple[str, list[str]]:
    """(timezone prefix, fields) of a cron expression."""
    prefix = ""
    text = cron.strip()
    match = re.match(r"^((?:CRON_)?TZ=\S+)\s+(.*)$", text)
    if match:
        prefix, text = match.group(1), match.group(2)
    return prefix, text.split()


def vertex_cron(cron: str) -> str:
    prefix, fields = cron_fields(cron)
    if len(fields) != 5:
        raise UserError(f'--cron "{cron}": Vertex AI schedules take 5 fields (minute hour day month weekday), e.g. "0 3 * * 1"')
    return " ".join(([prefix] if prefix else []) + fields)


def job_name(name: str | None) -> str:
    from pipelines.training import PIPELINE_NAME

    return name or f"{PIPELINE_NAME}-{datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%d-%H%M%S')}"


def vertex_job(pipeline_yaml: str, project: str, region: str, pipeline_root: str, parameters: dict[str, Any],
               display_name: str | None = None, enable_caching: bool | None = None,
               labels: dict[str, str] | None = None, credentials=None):
    """An `aiplatform.PipelineJob` for the compiled pipeline (not submitted yet)."""
    from google.cloud import aiplatform

    if not pipeline_root.startswith("gs://"):
        raise UserError(f"--pipeline-root {pipeline_root}: Vertex AI needs a gs:// folder for pipeline outputs, e.g. gs://BUCKET/odpipe")
    return aiplatform.PipelineJob(
        display_name=job_name(display_name),
        template_path=pipeline_yaml,
        pipeline_root=pipeline_root,
        parameter_values=parameters,
        enable_caching=enable_caching,
        labels=labels,
        project=project,
        location=region,
        credentials=credentials,
    )


def console_url(resource_name: str) -> str:
    """The Cloud console page of a pipeline job (projects/P/locations/L/pipelineJobs/ID)."""
    parts = resource_name.split("/")
    project, region, job_id = parts[1], parts[3], parts[-1]
    return f"https://console.cloud.google.com/vertex-ai/locations/{region}/pipelines/runs/{job_id}?project={project}"


def submit_vertex(pipeline_yaml: str, project: str, region: str, pipeline_root: str, parameters: dict[str, Any],
                  service_account: str | None = None, experiment: str | None = None, **options):
    """Submits a Vertex AI pipeline job (filed under Vertex AI Experiment `experiment`, created if
    needed: its runs' parameters and metrics side by side); returns the `PipelineJob`."""
    job = vertex_job(pipeline_yaml, project, region, pipeline_root, parameters, **options)
    try:
        job.submit(service_account=service_account, experiment=experiment or None)
    except RuntimeError as err:
        if experiment and "xperiment" in str(err):
            cause = f" ({first_line(err.__cause__, 160)})" if err.__cause__ else ""
            raise UserError(f"--experiment {experiment}: {first_line(err, 160)}{cause}; check the name (lowercase "
                            "letters, digits, '-') and access to Vertex AI Experiments in the project") from None
        raise
    return job


def wait_vertex(job) -> str:
    """Follows a submitted job to its end; returns its final state name (PIPELINE_STATE_...)."""
    try:
        job.wait()
    except RuntimeError:
        pass  # the SDK raises on a failed job; its state says which
    return job.state.name


def schedule_vertex(pipeline_yaml: str, project: str, region: str, pipeline_root: str, parameters: dict[str, Any],
                    cron: str, service_account: str | None = None, max_concurrent_runs: int = 1,
                    max_runs: int | None = None, **options):
    """Creates a Vertex AI pipeline-job schedule; returns the `PipelineJobSchedule`."""
    job = vertex_job(pipeline_yaml, project, region, pipeline_root, parameters, **options)
    return job.create_schedule(
        cron=vertex_cron(cron),
        display_name=job_name(options.get("display_name")) + "-schedule",
        max_concurrent_run_count=max_concurrent_runs,
        max_run_count=max_runs,
        service_account=service_account,
    )
