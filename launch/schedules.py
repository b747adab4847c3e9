"""`odpipe schedule list|pause|resume|delete`: the schedules odpipe made, on Vertex AI or Kubeflow.

    odpipe schedule list   (--vertex --project P --region R | --kfp-host URL)
    odpipe schedule pause  SCHEDULE (--vertex ... | --kfp-host URL)
    odpipe schedule resume SCHEDULE ...
    odpipe schedule delete SCHEDULE ...

"Made by odpipe" is read from the schedule itself: its pipeline is `odpipe-training` (the name in
the pipeline spec it runs), whatever display name it was given. SCHEDULE is what `list` shows: a
Vertex AI schedule id or resource name (projects/P/locations/R/schedules/ID), a Kubeflow recurring
run id. Vertex AI goes through google-cloud-aiplatform's PipelineJobSchedule, Kubeflow through
kfp.Client's recurring runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from launch import kubeflow
from odpipe.errors import UserError, first_line

ACTIONS = ("list", "pause", "resume", "delete")
DONE = {"pause": "paused", "resume": "resumed", "delete": "deleted"}


def _pipeline_name(spec: Any) -> str:
    """The pipeline name inside a pipeline spec (a dict, or Kubeflow's {pipeline_spec, platform_spec})."""
    spec = dict(spec or {})
    spec = spec.get("pipeline_spec", spec) if "pipelineInfo" not in spec else spec
    return str((dict(spec or {}).get("pipelineInfo") or {}).get("name", ""))


def _ours(spec: Any) -> bool:
    from pipelines.training import PIPELINE_NAME

    return _pipeline_name(spec) == PIPELINE_NAME


# -- Vertex AI ------------------------------------------------------------------------------------


def vertex_schedules(project: str, region: str, credentials=None) -> list[dict]:
    """The odpipe schedules of a Vertex AI project and region: name, display name, state, cron, next run."""
    from google.cloud import aiplatform

    found = []
    for schedule in aiplatform.PipelineJobSchedule.list(project=project, location=region, credentials=credentials):
        gca = schedule.gca_resource
        spec = type(gca).to_dict(gca).get("create_pipeline_job_request", {}).get("pipeline_job", {}).get("pipeline_spec")
        if _ours(spec):
            found.append({"id": gca.name, "name": gca.display_name, "state": gca.state.name, "cron": gca.cron,
                          "next": str(gca.next_run_time or "") if gca.state.name == "ACTIVE" else ""})
    return found


def vertex_action(action: str, schedule_id: str, project: str, region: str, credentials=None) -> str:
    """Pauses, resumes or deletes one Vertex AI schedule; returns its resource name."""
    from google.cloud import aiplatform

    schedule = aiplatform.PipelineJobSchedule.get(schedule_id, project=project, location=region,
                                                  credentials=credentials)
    {"pause": schedule.pause, "resume": schedule.resume, "delete": schedule.delete}[action]()
    return schedule.resource_name


# -- Kubeflow ------------------------------------------------------------------------------------


def kubeflow_schedules(host: str, namespace: str | None = None, existing_token: str | None = None) -> list[dict]:
    """The odpipe recurring runs of a Kubeflow Pipelines endpoint."""
    client = kubeflow.kfp_client(host, namespace, existing_token)
    found, token = [], ""
    while True:
        page = client.list_recurring_runs(page_token=token, page_size=100, namespace=namespace)
        for run in page.recurring_runs or []:
            if _ours(run.pipeline_spec):
                cron = (run.trigger.cron_schedule.cron if run.trigger and run.trigger.cron_schedule else "")
                found.append({"id": run.recurring_run_id, "name": run.display_name, "state": str(run.status or ""),
                              "cron": cron, "next": ""})
        token = page.next_page_token
        if not token:
            return found


def kubeflow_action(action: str, schedule_id: str, host: str, namespace: str | None = None,
                    existing_token: str | None = None) -> str:
    client = kubeflow.kfp_client(host, namespace, existing_token)
    {"pause": client.disable_recurring_run, "resume": client.enable_recurring_run,
     "delete": client.delete_recurring_run}[action](schedule_id)
    return schedule_id


# -- CLI ------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """`odpipe schedule ACTION [SCHEDULE]` for a target chosen as for `odpipe submit`."""
    if bool(args.vertex) == bool(args.kfp_host):
        raise UserError("choose one target: --vertex (with --project, --region) or --kfp-host URL")
    if args.vertex and not (args.project and args.region):
        raise UserError("--vertex needs --project and --region (e.g. --project my-project --region us-central1)")
    if args.action != "list" and not args.schedule_id:
        raise UserError(f"schedule {args.action} needs the SCHEDULE to {args.action}; see `odpipe schedule list`")
    where = f"Vertex AI ({args.project}, {args.region})" if args.vertex else f"Kubeflow ({args.kfp_host})"
    try:
        if args.action == "list":
            found = (vertex_schedules(args.project, args.region) if args.vertex
                     else kubeflow_schedules(args.kfp_host, args.namespace, args.token))
            for item in found:
                print(f"{item['id']}  {item['state']:<8} {item['cron']:<20} {item['name']}"
                      + (f"  next {item['next']}" if item["next"] else ""))
            print(f"{len(found)} odpipe schedule(s) on {where}")
            return 0
        done = (vertex_action(args.action, args.schedule_id, args.project, args.region) if args.vertex
                else kubeflow_action(args.action, args.schedule_id, args.kfp_host, args.namespace, args.token))
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - API and auth errors: one line naming the schedule
        target = args.schedule_id or "the schedules"
        raise UserError(f"{target} on {where}: {first_line(err, 200)}; check the id with `odpipe schedule list` "
                        "and your access") from None
    print(f"{DONE[args.action]} {done}")
    return 0
