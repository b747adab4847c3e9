"""Kubeflow Pipelines: runs and recurring runs, through `kfp.Client`.

Kubeflow's scheduler takes 6 cron fields (seconds first), so a 5-field expression gets "0 "
prepended.
"""

from __future__ import annotations

import warnings
from typing import Any

from launch.vertex import cron_fields, job_name
from odpipe.errors import UserError

FINAL_OK = "SUCCEEDED"


def kubeflow_cron(cron: str) -> str:
    prefix, fields = cron_fields(cron)
    if prefix:
        raise UserError(f'--cron "{cron}": Kubeflow recurring runs have no time-zone prefix; drop "{prefix}" (the cluster\'s time zone applies)')
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise UserError(f'--cron "{cron}": expected 5 fields (minute hour day month weekday), e.g. "0 3 * * 1"')
    return " ".join(fields)


def kfp_client(host: str, namespace: str | None = None, existing_token: str | None = None):
    import kfp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(host=host, namespace=namespace or "kubeflow", existing_token=existing_token)


def run_url(host: str, run_id: str) -> str:
    return f"{host.rstrip('/')}/#/runs/details/{run_id}"


def submit_kubeflow(pipeline_yaml: str, host: str, parameters: dict[str, Any], experiment: str = "odpipe",
                    run_name: str | None = None, namespace: str | None = None, pipeline_root: str | None = None,
                    enable_caching: bool | None = None, service_account: str | None = None,
                    existing_token: str | None = None):
    """Creates a Kubeflow Pipelines run; returns kfp's `RunPipelineResult`."""
    client = kfp_client(host, namespace, existing_token)
    return client.create_run_from_pipeline_package(
        pipeline_yaml, arguments=parameters, run_name=job_name(run_name), experiment_name=experiment,
        namespace=namespace, pipeline_root=pipeline_root, enable_caching=enable_caching,
        service_account=service_account,
    )


def wait_kubeflow(host: str, run_id: str, namespace: str | None = None, existing_token: str | None = None,
                  timeout: int = 7 * 24 * 3600) -> str:
    """Follows a run to its end; returns its final state (SUCCEEDED, FAILED, ...)."""
    run = kfp_client(host, namespace, existing_token).wait_for_run_completion(run_id, timeout=timeout)
    return str(getattr(run, "state", "UNKNOWN"))


def schedule_kubeflow(pipeline_yaml: str, host: str, parameters: dict[str, Any], cron: str,
                      experiment: str = "odpipe", run_name: str | None = None, namespace: str | None = None,
                      pipeline_root: str | None = None, enable_caching: bool | None = None,
                      service_account: str | None = None, max_concurrent_runs: int = 1,
                      existing_token: str | None = None):
    """Creates a Kubeflow recurring run; returns kfp's `V2beta1RecurringRun`."""
    client = kfp_client(host, namespace, existing_token)
    exp = client.create_experiment(name=experiment, namespace=namespace)
    return client.create_recurring_run(
        experiment_id=exp.experiment_id, job_name=job_name(run_name), cron_expression=kubeflow_cron(cron),
        max_concurrency=max_concurrent_runs, no_catchup=True, params=parameters,
        pipeline_package_path=pipeline_yaml, pipeline_root=pipeline_root, enable_caching=enable_caching,
        service_account=service_account,
    )
