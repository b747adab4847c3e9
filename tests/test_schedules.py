"""`odpipe schedule list|pause|resume|delete` and `odpipe submit --experiment` on Vertex AI, request-
tested like tests/test_launch.py: the gapic clients' calls are replaced by recorders (anonymous
credentials, no network); Kubeflow's recurring runs go to a fake KFP API server on 127.0.0.1."""

from __future__ import annotations

import json

import pytest
from test_launch import GS_INPUTS, IMAGES, VERTEX, _FakeKfp, kfp_host, vertex_api  # noqa: F401 (fixtures)

from odpipe.cli import main

PARENT = "projects/my-proj/locations/europe-west4"


def _schedule(name: str, pipeline: str, state: str = "ACTIVE"):
    from google.cloud.aiplatform_v1.types import schedule as gca_schedule

    return gca_schedule.Schedule(
        name=f"{PARENT}/schedules/{name}", display_name=f"{name}-weekly", cron="TZ=Europe/Amsterdam 0 3 * * 1",
        state=gca_schedule.Schedule.State[state],
        create_pipeline_job_request={"parent": PARENT, "pipeline_job": {"pipeline_spec": {
            "pipelineInfo": {"name": pipeline}}}})


@pytest.fixture
def schedule_api(vertex_api, monkeypatch):  # noqa: F811 (the fixture imported above)
    from google.cloud.aiplatform_v1.services.schedule_service import ScheduleServiceClient

    calls = []
    existing = {"11": _schedule("11", "odpipe-training"), "12": _schedule("12", "someone-else", "PAUSED")}

    class Done:  # a finished long-running operation
        operation = type("Op", (), {"name": f"{PARENT}/operations/1"})()

        def result(self, timeout=None):
            return None

    def list_schedules(self, request=None, **kwargs):
        calls.append(("list", request["parent"] if isinstance(request, dict) else request.parent))
        return list(existing.values())

    def get_schedule(self, name=None, request=None, **kwargs):
        return existing[(name or request.name).rsplit("/", 1)[-1]]

    def record(kind):
        def call(self, name=None, request=None, **kwargs):
            calls.append((kind, name or request.name))
            return Done()
        return call

    monkeypatch.setattr(ScheduleServiceClient, "list_schedules", list_schedules)
    monkeypatch.setattr(ScheduleServiceClient, "get_schedule", get_schedule)
    for kind in ("pause", "resume", "delete"):
        monkeypatch.setattr(ScheduleServiceClient, f"{kind}_schedule", record(kind))
    return calls


TARGET = ["--vertex", "--project", "my-proj", "--region", "europe-west4"]


def test_vertex_schedules_list_pause_resume_delete(schedule_api, capsys):
    assert main(["schedule", "list", *TARGET]) == 0
    out = capsys.readouterr().out
    assert f"{PARENT}/schedules/11  ACTIVE   TZ=Europe/Amsterdam 0 3 * * 1 11-weekly" in out
    assert "schedules/12" not in out and "1 odpipe schedule(s) on Vertex AI (my-proj, europe-west4)" in out
    assert schedule_api[0] == ("list", PARENT)
    for action, past in (("pause", "paused"), ("resume", "resumed"), ("delete", "deleted")):
        assert main(["schedule", action, "11", *TARGET]) == 0
        assert schedule_api[-1] == (action, f"{PARENT}/schedules/11")
        assert f"{past} {PARENT}/schedules/11" in capsys.readouterr().out
    assert main(["schedule", "pause", f"{PARENT}/schedules/11", *TARGET]) == 0  # the resource name works too
    assert schedule_api[-1] == ("pause", f"{PARENT}/schedules/11")


def test_schedule_action_errors_are_one_line(schedule_api, capsys):
    for argv, message in ((["schedule", "pause", *TARGET], "schedule pause needs the SCHEDULE to pause"),
                          (["schedule", "list", "--vertex", "--project", "p"], "--vertex needs --project and --region"),
                          (["schedule", "delete", "99", *TARGET], "99 on Vertex AI (my-proj, europe-west4): "),
                          (["schedule", *TARGET, *GS_INPUTS], "--cron is needed to create a schedule")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err


_KFP = {"GET": _FakeKfp.do_GET, "POST": _FakeKfp.do_POST}  # the fake server's own handlers


class _FakeRecurring(_FakeKfp):
    runs = [
        {"recurring_run_id": "rr-1", "display_name": "weekly", "status": "ENABLED",
         "trigger": {"cron_schedule": {"cron": "0 0 3 * * 1"}},
         "pipeline_spec": {"pipeline_spec": {"pipelineInfo": {"name": "odpipe-training"}}, "platform_spec": {}}},
        {"recurring_run_id": "rr-2", "display_name": "theirs", "status": "ENABLED",
         "pipeline_spec": {"pipelineInfo": {"name": "another-pipeline"}}},
    ]

    def do_GET(self):
        if self.path.startswith("/apis/v2beta1/recurringruns"):
            self.requests.append(("GET", self.path, None))
            return self._reply({"recurringRuns": self.runs, "total_size": 2})  # the API's own key
        return _KFP["GET"](self)

    def do_POST(self):
        if self.path.startswith("/apis/v2beta1/recurringruns/") and ":" in self.path:
            self.requests.append(("POST", self.path, None))
            return self._reply({})
        return _KFP["POST"](self)

    def do_DELETE(self):
        self.requests.append(("DELETE", self.path, None))
        return self._reply({})


def test_kubeflow_recurring_runs_list_pause_resume_delete(kfp_host, monkeypatch, capsys):  # noqa: F811
    host, requests = kfp_host
    for name in ("do_GET", "do_POST", "do_DELETE"):
        monkeypatch.setattr(_FakeKfp, name, getattr(_FakeRecurring, name), raising=False)
    monkeypatch.setattr(_FakeKfp, "runs", _FakeRecurring.runs, raising=False)
    assert main(["schedule", "list", "--kfp-host", host]) == 0
    out = capsys.readouterr().out
    assert "rr-1  ENABLED  0 0 3 * * 1          weekly" in out and "rr-2" not in out
    assert any(m == "GET" and p.startswith("/apis/v2beta1/recurringruns") for m, p, _ in requests)
    for action, request in (("pause", ("POST", "/apis/v2beta1/recurringruns/rr-1:disable")),
                            ("resume", ("POST", "/apis/v2beta1/recurringruns/rr-1:enable")),
                            ("delete", ("DELETE", "/apis/v2beta1/recurringruns/rr-1"))):
        assert main(["schedule", action, "rr-1", "--kfp-host", host]) == 0
        assert requests[-1][:2] == request
    assert "deleted rr-1" in capsys.readouterr().out


@pytest.fixture
def experiments(vertex_api, monkeypatch):  # noqa: F811
    """The metadata calls of Vertex AI Experiments: the experiment context, the run's context, the link."""
    from google.cloud.aiplatform_v1.services.metadata_service import MetadataServiceClient
    from google.cloud.aiplatform_v1.services.pipeline_service import PipelineServiceClient
    from google.cloud.aiplatform_v1.types import context as gca_context
    from google.cloud.aiplatform_v1.types import metadata_store as gca_store
    from google.cloud.aiplatform_v1.types import pipeline_job as gca_job
    from google.cloud.aiplatform_v1.types import pipeline_state

    store = f"{PARENT}/metadataStores/default/contexts"
    sent = vertex_api.setdefault("metadata", [])

    def get_context(self, name=None, request=None, **kwargs):
        name = name or request.name
        sent.append(("get_context", name))
        title = "system.Experiment" if name.endswith("/retrain-2026") else "system.PipelineRun"
        return gca_context.Context(name=name, display_name=name.rsplit("/", 1)[-1], schema_title=title,
                                   metadata={"experiment_deleted": False})

    def get_pipeline_job(self, name=None, request=None, **kwargs):
        return gca_job.PipelineJob(name=name or request.name, state=pipeline_state.PipelineState.PIPELINE_STATE_RUNNING,
                                   job_detail={"pipeline_run_context": {"name": f"{store}/run-ctx"}})

    def add_context_children(self, context=None, child_contexts=None, request=None, **kwargs):
        sent.append(("add_context_children", context, list(child_contexts)))

    def get_metadata_store(self, name=None, request=None, **kwargs):
        sent.append(("get_metadata_store", name or request.name))
        return gca_store.MetadataStore(name=name or request.name)

    monkeypatch.setattr(MetadataServiceClient, "get_metadata_store", get_metadata_store)
    monkeypatch.setattr(MetadataServiceClient, "get_context", get_context)
    monkeypatch.setattr(MetadataServiceClient, "add_context_children", add_context_children)
    monkeypatch.setattr(PipelineServiceClient, "get_pipeline_job", get_pipeline_job)
    return sent


def test_submit_files_the_run_under_a_vertex_experiment(vertex_api, experiments, capsys):  # noqa: F811
    argv = ["submit", *VERTEX, *GS_INPUTS, *IMAGES, "--experiment", "retrain-2026"]
    assert main(argv) == 0
    assert vertex_api["pipeline_job"]["parent"] == PARENT
    store = f"{PARENT}/metadataStores/default/contexts"
    assert ("add_context_children", f"{store}/retrain-2026", [f"{store}/run-ctx"]) in experiments
    assert "(experiment retrain-2026)" in capsys.readouterr().out
    json.dumps(experiments)  # plain names, as sent
