"""odpipe compile / submit / schedule and the parameter plumbing, without reaching any service.

Vertex AI: the gapic clients' create calls are replaced by recorders, so the test sees the exact
request objects google-cloud-aiplatform would send. Kubeflow: kfp.Client talks HTTP to a fake
Kubeflow Pipelines API server on 127.0.0.1, which records each request.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from launch import kubeflow, local, spec, vertex
from odpipe.cli import main
from odpipe.errors import UserError

GS_INPUTS = ["--annotations", "gs://bucket/data/annotations", "--images", "gs://bucket/data/images"]
IMAGES = ["--image", "reg.example/odpipe:1", "--trainer-image", "reg.example/odpipe-gpu:1"]


# ------------------------------------------------------------------------------------------ compile


def test_compile_cli_chooses_images(tmp_path, capsys):
    out = tmp_path / "p.yaml"
    assert main(["compile", "-o", str(out), "--image", "reg.example/o:7", "--trainer-image", "reg.example/g:7"]) == 0
    spec = yaml.safe_load(out.read_text())
    images = {name: ex["container"]["image"] for name, ex in spec["deploymentSpec"]["executors"].items()}
    # on Vertex AI the trainer is a CustomJob: GCPC's launcher starts it on the trainer image
    assert images.pop("exec-train").startswith("gcr.io/ml-pipeline/google-cloud-pipeline-components:")
    machine = spec["components"]["comp-condition-1"]["dag"]["tasks"]["trainer-machine"]["inputs"]["parameters"]
    assert machine["container"]["runtimeValue"]["constant"]["image_uri"] == "reg.example/g:7"
    assert set(images.values()) == {"reg.example/o:7"}
    assert "compiled pipeline" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ parameters


def parse(argv):
    from odpipe.cli import build_parser

    return build_parser(argv[0]).parse_args(argv)


def test_only_given_parameters_are_sent(tmp_path):
    args = parse(["submit", "--kfp-host", "http://x", *GS_INPUTS, "--steps", "500", "--min-map", "0.3",
                  "--beam-arg=--region=europe-west4", "--beam-arg=--max_num_workers=4", "--tflite", "none",
                  "--param", "shards=8", "--param", "model=retinanet-resnet50fpn"])
    assert spec.pipeline_parameters(args) == {
        "annotations": "gs://bucket/data/annotations", "images": "gs://bucket/data/images",
        "steps": 500, "min_map": 0.3, "tflite": "none", "shards": 8, "model": "retinanet-resnet50fpn",
        "beam_args": ["--region=europe-west4", "--max_num_workers=4"],
    }
    run_args = parse(["run", "--annotations", "rel/ann", "--images", str(tmp_path)])
    params = spec.pipeline_parameters(run_args, local=True)
    assert params["annotations"].startswith("/") and params["annotations"].endswith("rel/ann")


@pytest.mark.parametrize("argv", [["--init-checkpoint", "none"], ["--param", "init_checkpoint=none"],
                                  ["--init-checkpoint", "default"], ["--param", "init_checkpoint=default"]])
def test_keywords_of_path_parameters_reach_the_pipeline_unchanged(argv, tmp_path):
    """Issue 14: `--init-checkpoint none` became <cwd>/none, and train failed after the data stages."""
    params = spec.pipeline_parameters(parse(["run", "--annotations", str(tmp_path), "--images", str(tmp_path), *argv]),
                                      local=True)
    assert params["init_checkpoint"] == argv[-1].rpartition("=")[2]


def test_local_paths_are_made_absolute_and_must_exist(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lm.pbtxt").write_text('item {\n  id: 1\n  name: "a"\n}\n')
    base = ["run", "--annotations", ".", "--images", "."]
    params = spec.pipeline_parameters(parse([*base, "--existing-label-map", "lm.pbtxt", "--model-home", "models",
                                             "--config-overrides", "trainer: {train_steps: 5}"]), local=True)
    assert params["existing_label_map"] == str(tmp_path / "lm.pbtxt") and params["model_home"] == str(tmp_path / "models")
    assert params["config_overrides"] == "trainer: {train_steps: 5}"  # YAML text is not a path
    for flag in ("--init-checkpoint", "--existing-label-map", "--config-overrides"):
        assert main([*base, flag, "missing-thing"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"{flag} missing-thing: no such file or folder" in err, err


def test_bad_settings_fail_before_anything_starts(tmp_path, capsys):
    """Checked in the front end in seconds (the same checks the first task runs on a cluster)."""
    import time

    from odpipe.sample_data import write_sample_data

    write_sample_data(str(tmp_path / "d"), images=4, seed=0)
    base = ["run", "--annotations", str(tmp_path / "d" / "annotations"), "--images", str(tmp_path / "d" / "images"),
            "--work-dir", str(tmp_path / "w"), "--init-checkpoint", "none"]
    for extra, message in ((["--model", "retinanet-nope"], "--model retinanet-nope: neither an odpipe preset"),
                           (["--config-overrides", "trainer: {no_such_key: 1}"], "no_such_key"),
                           (["--min-map", "2"], "--min-map 2.0: must be a number in"),
                           (["--tflite", "int4"], "--tflite int4: unknown kind")):
        start = time.monotonic()
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err
        assert time.monotonic() - start < 60 and not (tmp_path / "w" / "runs").exists()


def test_every_parameter_flag_reaches_the_pipeline():
    """The flags are made from the pipeline's own inputDefinitions: every parameter has one, typed."""
    samples = {"STRING": ("gs://b/x", "gs://b/x"), "NUMBER_INTEGER": ("3", 3), "NUMBER_DOUBLE": ("0.5", 0.5),
               "STRUCT": ('{"pool": "gpu"}', {"pool": "gpu"})}
    declared = spec.parameters()
    assert {"model_home", "force", "margin", "warm_start", "registry_model"} <= set(declared)
    for name, param in declared.items():
        flag = "--" + name.replace("_", "-")
        kind = param["parameterType"]
        if kind == "BOOLEAN":
            argv, expected = [flag], True
        elif kind == "LIST":
            argv, expected = [f"{flag}=--x=1"], ["--x=1"]
        else:
            argv, expected = [flag, samples[kind][0]], samples[kind][1]
        params = spec.pipeline_parameters(parse(["submit", "--kfp-host", "h", *GS_INPUTS, *argv]))
        assert params[name] == expected, flag
        spec.check_parameters(params)  # a name the pipeline has
    assert spec.pipeline_parameters(parse(["submit", "--kfp-host", "h", *GS_INPUTS, "--no-force"]))["force"] is False


def test_help_and_order_come_from_the_pipeline(capsys):
    with pytest.raises(SystemExit):
        main(["run", "-h"])
    text = capsys.readouterr().out
    assert "Where published models live" in text and "--model-home" in text  # the pipeline's docstring
    # grouped as the data flows, in a fixed order, integers shown as integers
    titles = [line.strip() for line in text.splitlines() if line.startswith("pipeline parameters:")]
    assert titles == [f"pipeline parameters: {g}:" for g in ("data", "split", "training", "gate", "publishing", "cloud")]
    assert text.index("--annotations") < text.index("--eval-fraction") < text.index("--steps") < text.index("--min-map")
    assert "(default 0.0)" not in text.split("--steps", 1)[1].split("--", 1)[0] and "(default 1)" in text
    assert set(spec.parameters()) == {n for names in spec.groups().values() for n in names}
    order = spec.task_order()
    assert order[0] == "fingerprint" and order.index("train") < order.index("export") < order.index("evaluate")
    assert order.index("evaluate") < order.index("publish") < order.index("register")


def test_parameter_errors_are_one_line(capsys):
    with pytest.raises(UserError, match="unknown pipeline parameter.*stepz"):
        spec.check_parameters({"annotations": "a", "images": "b", "stepz": 1})
    with pytest.raises(UserError, match="missing --images"):
        spec.check_parameters({"annotations": "a"})
    assert main(["submit", "--kfp-host", "http://x", *GS_INPUTS, "--param", "oops"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "expected NAME=VALUE" in err and "Traceback" not in err


def test_cron_translation():
    assert vertex.vertex_cron("0 3 * * 1") == "0 3 * * 1"
    assert vertex.vertex_cron("TZ=Europe/Berlin 0 3 * * 1") == "TZ=Europe/Berlin 0 3 * * 1"
    assert kubeflow.kubeflow_cron("0 3 * * 1") == "0 0 3 * * 1"  # seconds field first
    assert kubeflow.kubeflow_cron("30 0 3 * * 1") == "30 0 3 * * 1"
    for bad in ("0 3 * *", "every monday"):
        with pytest.raises(UserError, match="5 fields"):
            vertex.vertex_cron(bad)
    with pytest.raises(UserError, match="time-zone"):
        kubeflow.kubeflow_cron("TZ=Europe/Berlin 0 3 * * 1")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["submit", *GS_INPUTS], "choose one target"),
        (["submit", "--vertex", "--kfp-host", "http://x", *GS_INPUTS], "choose one target"),
        (["submit", "--vertex", "--project", "p", *GS_INPUTS], "--vertex needs --region, --pipeline-root"),
        (["submit", "--vertex", "--project", "p", "--region", "r", "--pipeline-root", "gs://b/r",
          "--annotations", "/local/ann", "--images", "gs://b/i"], "cannot read local folders"),
        (["submit", "--vertex", "--project", "p", "--region", "r", "--pipeline-root", "/tmp/x", *GS_INPUTS],
         "needs a gs:// folder"),
        (["schedule", "--cron", "bad", "--vertex", "--project", "p", "--region", "r", "--pipeline-root", "gs://b/r",
          *GS_INPUTS], "5 fields"),
        (["run", "--annotations", "/no/such/dir", "--images", "/no/such/dir"], "folder not found"),
        (["submit", "--vertex", "--project", "p", "--region", "r", "--pipeline-root", "gs://b/r", *GS_INPUTS,
          *IMAGES, "--model-home", "old/home"], "--model-home old/home: a cloud run cannot read local files"),
        (["submit", "--vertex", "--project", "p", "--region", "r", "--pipeline-root", "gs://b/r", *GS_INPUTS],
         "--image odpipe:"),
        (["schedule", "--cron", "0 3 * * 1", "--kfp-host", "http://x", *GS_INPUTS, "--image", "reg.example/o:1"],
         "--trainer-image odpipe-gpu:"),
    ],
)
def test_usage_errors(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(vertex, "vertex_job", _refuse_network(vertex.vertex_job))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0, err


def _refuse_network(real):
    """vertex_job up to the PipelineJob, which these error cases must never reach."""

    def wrapper(pipeline_yaml, project, region, pipeline_root, *args, **kwargs):
        if not pipeline_root.startswith("gs://"):
            return real(pipeline_yaml, project, region, pipeline_root, *args, **kwargs)
        raise AssertionError("should have failed before building a Vertex job")

    return wrapper


def test_run_names_the_failing_task(tmp_path, capsys):
    """A real local run whose csv task fails (an XML that is not labelImg's, under --strict): one
    line naming the task (the fingerprint hashes the file; the csv task reads it)."""
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "a.xml").write_text("<annotation><filename>a.jpg</filename><object><name>",
                                                    encoding="utf-8")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"\xff\xd8")
    argv = ["run", "--annotations", str(tmp_path / "annotations"), "--images", str(tmp_path / "images"),
            "--work-dir", str(tmp_path / "work"), "--init-checkpoint", "none"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()[-1]
    assert err.startswith("odpipe run: error: local pipeline run failed:") and "'annotations-to-csv'" in err
    assert "\x1b[" not in err
    assert "not well-formed XML" in captured.out  # the task's own one-line error, in its log
    assert "annotations-to-csv   failed" in captured.out and "train                not run" in captured.out


# ------------------------------------------------------------------------------------------ Vertex


@pytest.fixture
def vertex_api(monkeypatch):
    """Records the requests google-cloud-aiplatform sends; anonymous credentials; no network."""
    import google.auth
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.aiplatform.utils import gcs_utils
    from google.cloud.aiplatform_v1.services.pipeline_service import PipelineServiceClient
    from google.cloud.aiplatform_v1.services.schedule_service import ScheduleServiceClient

    sent = {}
    monkeypatch.setattr(google.auth, "default", lambda *a, **k: (AnonymousCredentials(), "default-project"))
    for name in ("GOOGLE_CLOUD_PROJECT", "CLOUD_ML_PROJECT_ID"):  # else the SDK looks the project up online
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(
        gcs_utils, "create_gcs_bucket_for_pipeline_artifacts_if_it_does_not_exist", lambda **k: sent.setdefault("bucket", k)
    )

    def create_pipeline_job(self, parent=None, pipeline_job=None, pipeline_job_id=None, **kwargs):
        sent["pipeline_job"] = dict(parent=parent, pipeline_job=pipeline_job, pipeline_job_id=pipeline_job_id)
        job = type(pipeline_job)(pipeline_job)
        job.name = f"{parent}/pipelineJobs/{pipeline_job_id}"
        return job

    def create_schedule(self, parent=None, schedule=None, **kwargs):
        sent["schedule"] = dict(parent=parent, schedule=schedule)
        created = type(schedule)(schedule)
        created.name = f"{parent}/schedules/123"
        return created

    monkeypatch.setattr(PipelineServiceClient, "create_pipeline_job", create_pipeline_job)
    monkeypatch.setattr(ScheduleServiceClient, "create_schedule", create_schedule)
    return sent


VERTEX = ["--vertex", "--project", "my-proj", "--region", "europe-west4", "--pipeline-root", "gs://my-bucket/root"]


def test_submit_vertex_request(vertex_api, capsys):
    argv = ["submit", *VERTEX, "--service-account", "runner@my-proj.iam.gserviceaccount.com", *GS_INPUTS,
            "--steps", "300", "--accelerator-type", "NVIDIA_L4", "--label", "team=vision", "--name", "nightly",
            *IMAGES]
    assert main(argv) == 0
    request = vertex_api["pipeline_job"]
    assert request["parent"] == "projects/my-proj/locations/europe-west4"
    job = request["pipeline_job"]
    assert job.display_name == "nightly"
    assert job.service_account == "runner@my-proj.iam.gserviceaccount.com"
    assert job.runtime_config.gcs_output_directory == "gs://my-bucket/root"
    values = {k: v for k, v in job.runtime_config.parameter_values.items()}
    assert values["annotations"] == "gs://bucket/data/annotations"
    assert values["steps"] == 300 and values["accelerator_type"] == "NVIDIA_L4"
    assert dict(job.labels)["team"] == "vision"
    spec = json.dumps(type(job).to_dict(job)["pipeline_spec"])
    assert "reg.example/odpipe-gpu:1" in spec and "my-proj" not in spec  # project only in the request
    out = capsys.readouterr().out
    assert "submitted Vertex AI pipeline job projects/my-proj/locations/europe-west4/pipelineJobs/" in out
    assert "console: https://console.cloud.google.com/vertex-ai/locations/europe-west4/pipelines/runs/" in out


def test_schedule_vertex_request(vertex_api, capsys, tmp_path):
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("task:\n  model:\n    num_classes: 4", encoding="utf-8")
    argv = ["schedule", "--cron", "TZ=Europe/Amsterdam 0 3 * * 1", "--max-runs", "10", *VERTEX, *GS_INPUTS,
            "--min-map", "0.4", "--no-cache", "--config", str(overrides), *IMAGES]
    assert main(argv) == 0
    schedule = vertex_api["schedule"]["schedule"]
    assert vertex_api["schedule"]["parent"] == "projects/my-proj/locations/europe-west4"
    assert schedule.cron == "TZ=Europe/Amsterdam 0 3 * * 1"
    assert schedule.max_run_count == 10 and schedule.max_concurrent_run_count == 1
    job = schedule.create_pipeline_job_request.pipeline_job
    assert job.runtime_config.gcs_output_directory == "gs://my-bucket/root"
    assert job.runtime_config.parameter_values["min_map"] == 0.4
    # a local overrides file is sent inline, as YAML text
    assert job.runtime_config.parameter_values["config_overrides"] == "task:\n  model:\n    num_classes: 4\n"
    tasks = type(job).to_dict(job)["pipeline_spec"]["components"]["comp-condition-1"]["dag"]["tasks"]
    assert tasks["train"]["cachingOptions"].get("enableCache") in (None, False)  # --no-cache
    assert "created Vertex AI schedule" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ Kubeflow


class _FakeKfp(BaseHTTPRequestHandler):
    requests: list = []
    final_state = "SUCCEEDED"

    def log_message(self, *args):  # keep test output clean
        pass

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.requests.append(("GET", self.path, None))
        if self.path.startswith("/apis/v2beta1/healthz"):
            return self._reply({"multi_user": False})
        if self.path.startswith("/apis/v2beta1/experiments"):
            return self._reply({})  # no experiment yet: the client creates one
        if self.path.startswith("/apis/v2beta1/runs/run-1"):
            return self._reply({"run_id": "run-1", "display_name": "r", "state": self.final_state})
        self.send_error(404)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        self.requests.append(("POST", self.path, body))
        if self.path == "/apis/v2beta1/experiments":
            return self._reply({"experiment_id": "exp-1", "display_name": body["display_name"]})
        if self.path == "/apis/v2beta1/runs":
            return self._reply({"run_id": "run-1", "display_name": body["display_name"]})
        if self.path == "/apis/v2beta1/recurringruns":
            return self._reply({"recurring_run_id": "rr-1", "display_name": body["display_name"]})
        self.send_error(404)


@pytest.fixture
def kfp_host():
    _FakeKfp.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeKfp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _FakeKfp.requests
    server.shutdown()
    server.server_close()


def _posted(requests, path):
    bodies = [body for method, p, body in requests if method == "POST" and p == path]
    assert len(bodies) == 1, requests
    return bodies[0]


def test_submit_kubeflow_request(kfp_host, tmp_path, capsys):
    host, requests = kfp_host
    pipeline = tmp_path / "p.yaml"
    images = ["--image", "reg.example/odpipe:2", "--trainer-image", "reg.example/g:2"]
    # a pipeline compiled for Vertex AI carries a Vertex accelerator name: Kubeflow refuses it in one line
    assert main(["compile", "-o", str(tmp_path / "vertex.yaml"), *images]) == 0
    assert main(["submit", "--kfp-host", host, "--pipeline", str(tmp_path / "vertex.yaml"), *GS_INPUTS]) == 2
    assert "--accelerator-type NVIDIA_TESLA_T4: a Vertex AI name" in capsys.readouterr().err
    assert main(["submit", "--kfp-host", host, *GS_INPUTS, *images, "--accelerator-type", "NVIDIA_L4"]) == 2
    assert "--accelerator-type NVIDIA_L4: a Vertex AI name" in capsys.readouterr().err
    assert main(["compile", "-o", str(pipeline), "--target", "kubeflow", *images]) == 0
    argv = ["submit", "--kfp-host", host, "--pipeline", str(pipeline), "--experiment", "retrain",
            "--pipeline-root", "gs://kfp-bucket/root", *GS_INPUTS, "--eval-fraction", "0.25",
            "--beam-runner", "DataflowRunner", "--beam-arg=--project=data-proj", "--no-cache"]
    assert main(argv) == 0
    assert _posted(requests, "/apis/v2beta1/experiments")["display_name"] == "retrain"
    run = _posted(requests, "/apis/v2beta1/runs")
    assert run["experiment_id"] == "exp-1"
    assert run["runtime_config"]["pipeline_root"] == "gs://kfp-bucket/root"
    assert run["runtime_config"]["parameters"] == {
        "annotations": "gs://bucket/data/annotations", "images": "gs://bucket/data/images",
        "eval_fraction": 0.25, "beam_runner": "DataflowRunner", "beam_args": ["--project=data-proj"],
    }
    # with a Kubernetes platform spec kfp sends {pipeline_spec, platform_spec}
    spec, platform_spec = run["pipeline_spec"]["pipeline_spec"], run["pipeline_spec"]["platform_spec"]
    assert spec["pipelineInfo"]["name"] == "odpipe-training"
    assert platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]["tolerations"]
    assert "NVIDIA_TESLA" not in json.dumps(spec)  # compiled for Kubeflow: no Vertex accelerator name
    assert spec["deploymentSpec"]["executors"]["exec-split"]["container"]["image"] == "reg.example/odpipe:2"
    assert all(t.get("cachingOptions", {}).get("enableCache") in (None, False) for t in spec["root"]["dag"]["tasks"].values())
    assert "submitted Kubeflow run run-1" in capsys.readouterr().out


@pytest.mark.parametrize("state, rc", [("SUCCEEDED", 0), ("FAILED", 1)])
def test_submit_wait_follows_the_run_and_fails_with_it(kfp_host, capsys, monkeypatch, state, rc):
    host, requests = kfp_host
    monkeypatch.setattr(_FakeKfp, "final_state", state)
    assert main(["submit", "--kfp-host", host, *GS_INPUTS, *IMAGES, "--wait"]) == rc
    captured = capsys.readouterr()
    assert f"console: {host}/#/runs/details/run-1" in captured.out and f"run finished: {state}" in captured.out
    assert ("the run ended FAILED" in captured.err) == (rc == 1) and captured.err.count("\n") <= 1
    assert any(method == "GET" and path.startswith("/apis/v2beta1/runs/run-1") for method, path, _ in requests)


def test_schedule_kubeflow_request(kfp_host, capsys):
    host, requests = kfp_host
    argv = ["schedule", "--cron", "0 3 * * 1", "--max-concurrent-runs", "2", "--kfp-host", host, "--name", "weekly",
            *GS_INPUTS, "--existing-label-map", "gs://bucket/models/current/label_map.pbtxt", *IMAGES]
    assert main(argv) == 0
    recurring = _posted(requests, "/apis/v2beta1/recurringruns")
    assert recurring["display_name"] == "weekly"
    assert recurring["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert recurring["max_concurrency"] == "2" or recurring["max_concurrency"] == 2
    assert recurring["mode"] == "ENABLE" and recurring["no_catchup"] is True
    assert recurring["runtime_config"]["parameters"]["existing_label_map"] == "gs://bucket/models/current/label_map.pbtxt"
    assert recurring["pipeline_spec"]["pipeline_spec"]["components"]["comp-condition-1"]["dag"]["tasks"]["train"]
    assert "created Kubeflow recurring run rr-1 (0 0 3 * * 1)" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ demo


def test_demo_generates_data_and_runs_the_pipeline_locally(tmp_path, monkeypatch, capsys):
    """The demo's wiring (the real local run is tests/test_pipeline.py's): data, parameters, output."""
    from launch import demo

    seen = {}

    def fake_run_locally(params, work_dir, echo=print):
        seen.update(params=params, work_dir=work_dir)
        return {"tasks": {}, "metrics": {"mAP": 0.61, "mAP@0.5": 0.93, "blessed": True}, "blessed": True,
                "report": f"{work_dir}/runs/x/evaluate/evaluation/report.html", "export": f"{work_dir}/e"}

    monkeypatch.setattr(local, "run_locally", fake_run_locally)
    assert demo.main([str(tmp_path / "demo"), "--images", "4", "--steps", "7"]) == 0
    assert len(list((tmp_path / "demo" / "data" / "annotations").glob("*.xml"))) == 4
    assert seen["params"] == {
        "annotations": str(tmp_path / "demo" / "data" / "annotations"),
        "images": str(tmp_path / "demo" / "data" / "images"), "model": "retinanet-mobilenetv2",
        "model_home": str(tmp_path / "demo" / "models"), "init_checkpoint": "none",
        "tflite": "none", "steps": 7,
    }
    assert seen["work_dir"] == str(tmp_path / "demo" / "work")
    out = capsys.readouterr().out
    assert "mAP 0.610, mAP@0.5 0.930" in out and "report.html: " + str(tmp_path / "demo" / "work") in out


def test_demo_prints_undefined_map_as_na(tmp_path, monkeypatch, capsys):
    """mAP is null in metrics.json when the eval data holds no labelled object: no crash, "n/a"."""
    from launch import demo

    def fake_run_locally(params, work_dir, echo=print):
        return {"tasks": {}, "metrics": {"mAP": None, "mAP@0.5": None, "blessed": False}, "blessed": False}

    monkeypatch.setattr(local, "run_locally", fake_run_locally)
    assert demo.main([str(tmp_path / "demo"), "--images", "2"]) == 0
    assert "mAP n/a, mAP@0.5 n/a" in capsys.readouterr().out


def test_print_result_shows_the_blessing_reasons():
    metrics = {"mAP": 0.42, "blessed": False, "blessing": {"reasons": ["mAP 0.4200 < --min-map 0.5"]}}
    lines = []
    local.print_result({"metrics": metrics, "blessed": False}, echo=lines.append)
    assert "blessed: False (mAP 0.4200 < --min-map 0.5)" in lines
