"""The trainer as each platform runs it, read back from the compiled YAML.

Vertex AI: the trainer is a CustomJob (GCPC's `create_custom_training_job_from_component`); the
test resolves the CustomJob launcher's payload the way the pipeline backend does (the task's
inputs, the trainer_machine task's output, the component's defaults) and hands it to GCPC's own
`create_custom_job_with_client`, whose request is the CustomJob API's proto: what would be sent.
Kubeflow: the GPU limit and the Kubernetes platform spec (node selector, tolerations, image pull
secrets), and no Vertex AI names.
"""

from __future__ import annotations

import json
import re

import pytest
from kfp import components as kfp_components

from components import platform
from launch import spec
from odpipe.cli import main
from odpipe.errors import UserError
from odpipe.tasks.platform import trainer_machine_task

IMAGES = ["--image", "reg.example/odpipe:3", "--trainer-image", "reg.example/odpipe-gpu:3"]
PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}")


def _compile(tmp_path, target, *extra):
    out = tmp_path / f"{target}.yaml"
    assert main(["compile", "-o", str(out), "--target", target, *IMAGES, *extra]) == 0
    kfp_components.load_component_from_file(str(out))  # loads back in kfp
    return spec.load_compiled(str(out))


def _value(ref: dict, pipeline_values: dict, outputs: dict):
    if "componentInputParameter" in ref:
        return pipeline_values[ref["componentInputParameter"].removeprefix("pipelinechannel--")]
    if "taskOutputParameter" in ref:
        return outputs[ref["taskOutputParameter"]["producerTask"]]
    return ref["runtimeValue"]["constant"]


def _resolve(template: str, inputs: dict, definitions: dict) -> str:
    """The launcher's --payload with each input placeholder replaced by its value: inside quotes as
    text, elsewhere as JSON (the way the backend fills a container's arguments)."""

    def fill(match):
        name = match.group(1)
        value = inputs.get(name, definitions[name].get("defaultValue"))
        if value is None:
            value = {"LIST": [], "STRUCT": {}}.get(definitions[name]["parameterType"], "")
        quoted = template[match.start() - 1] == '"'
        return json.dumps(value)[1:-1] if quoted and isinstance(value, str) else json.dumps(value)

    return PLACEHOLDER.sub(fill, template)


def test_vertex_trainer_is_a_custom_job_with_its_machine_from_pipeline_parameters(tmp_path):
    from google.cloud.aiplatform_v1.types import CreateCustomJobRequest
    from google_cloud_pipeline_components.container.v1.custom_job import remote_runner
    from google_cloud_pipeline_components.container.v1.gcp_launcher.utils import json_util

    pipeline, platform_spec = _compile(tmp_path, "vertex")
    assert platform_spec == {}
    params = pipeline["root"]["inputDefinitions"]["parameters"]
    assert params["machine_type"]["defaultValue"] == "n1-standard-8"
    assert params["accelerator_type"]["defaultValue"] == "NVIDIA_TESLA_T4" and params["strategy"]["defaultValue"] == "STANDARD"
    assert not {"node_selector", "tolerations"} & set(params)  # Kubeflow's own
    values = {name: p.get("defaultValue") for name, p in params.items()}
    values.update(machine_type="g2-standard-8", accelerator_type="NVIDIA_L4", accelerator_count=2,
                  boot_disk_type="pd-balanced", boot_disk_size_gb=250, strategy="SPOT",
                  trainer_service_account="trainer@p.iam.gserviceaccount.com",
                  network="projects/123/global/networks/vpc", tensorboard="projects/p/locations/l/tensorboards/9",
                  base_output_directory="gs://b/odpipe/trainer")

    tasks = pipeline["components"]["comp-condition-1"]["dag"]["tasks"]
    machine = tasks["trainer-machine"]["inputs"]["parameters"]
    machine_args = {name: _value(ref, values, {}) for name, ref in machine.items()}
    assert machine_args["container"]["image_uri"] == "reg.example/odpipe-gpu:3"
    specs = trainer_machine_task(**machine_args).value  # what the trainer_machine task returns
    train = tasks["train"]
    assert train["componentRef"]["name"] == "comp-train" and "trainer-machine" in train["dependentTasks"]
    assert train["retryPolicy"]["maxRetryCount"] == 3
    inputs = {name: _value(ref, values, {"trainer-machine": specs}) for name, ref in train["inputs"]["parameters"].items()}
    definitions = pipeline["components"]["comp-train"]["inputDefinitions"]["parameters"]
    assert {"train_records", "eval_records", "label_map", "champion"} <= set(
        pipeline["components"]["comp-train"]["inputDefinitions"]["artifacts"])
    container = pipeline["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert "google_cloud_pipeline_components.container.v1.custom_job.launcher" in " ".join(container["command"])
    args = container["args"]
    payload = _resolve(args[args.index("--payload") + 1], inputs, definitions)

    sent = {}

    class Client:  # the gapic client's first step: the request proto from the launcher's dict
        def create_custom_job(self, parent, custom_job):
            sent["request"] = CreateCustomJobRequest(parent=parent, custom_job=custom_job)
            return sent["request"].custom_job

    job_spec = json_util.recursive_remove_empty(json.loads(remote_runner.insert_system_labels_into_payload(payload)))
    remote_runner.create_custom_job_with_client(Client(), "projects/p/locations/europe-west4", job_spec)
    job = sent["request"].custom_job
    pool = job.job_spec.worker_pool_specs[0]
    assert job.display_name == "odpipe-train"
    assert pool.machine_spec.machine_type == "g2-standard-8"
    assert pool.machine_spec.accelerator_type.name == "NVIDIA_L4" and pool.machine_spec.accelerator_count == 2
    assert pool.disk_spec.boot_disk_type == "pd-balanced" and pool.disk_spec.boot_disk_size_gb == 250
    assert pool.replica_count == 1 and pool.container_spec.image_uri == "reg.example/odpipe-gpu:3"
    # the executor input placeholder reaches the CustomJob as GCPC writes it (the backend fills it)
    assert list(pool.container_spec.args)[:2] == ["--executor_input", "{{$.json_escape[1]}}"]
    assert "train" in list(pool.container_spec.args)
    assert job.job_spec.scheduling.strategy.name == "SPOT"
    assert job.job_spec.service_account == "trainer@p.iam.gserviceaccount.com"
    assert job.job_spec.network == "projects/123/global/networks/vpc"
    assert job.job_spec.tensorboard == "projects/p/locations/l/tensorboards/9"
    assert job.job_spec.base_output_directory.output_uri_prefix == "gs://b/odpipe/trainer"


def test_vertex_trainer_without_accelerator_and_the_machine_checks():
    container = platform.vertex_trainer(__import__("components.stages").stages.build("r.x/o:1", "r.x/g:1").train,
                                        "r.x/o:1")[2]
    assert "{{$" not in json.dumps(container)  # escaped on the way through trainer_machine
    base = dict(container=container, machine_type="n1-standard-8", accelerator_type="", accelerator_count=0,
                boot_disk_type="pd-ssd", boot_disk_size_gb=100, strategy="STANDARD")
    assert trainer_machine_task(**base).value[0]["machine_spec"] == {"machine_type": "n1-standard-8"}
    for change, message in (({"strategy": "spot"}, "--strategy 'spot': use one of STANDARD, SPOT, FLEX_START"),
                            ({"accelerator_type": "nvidia.com/gpu"}, "nvidia.com/gpu is for Kubeflow"),
                            ({"accelerator_type": "NVIDIA_L4"}, "--accelerator-count 0: at least 1"),
                            ({"boot_disk_size_gb": 50}, "at least 100 GB"),
                            ({"machine_type": "big"}, "not a Compute Engine machine type"),
                            ({"tensorboard": "projects/p/locations/l/tensorboards/1"}, "--base-output-directory gs://"),
                            ({"tensorboard": "tb-1"}, "projects/P/locations/L/tensorboards/ID")):
        with pytest.raises(UserError, match=re.escape(message)):
            trainer_machine_task(**{**base, **change})


def test_kubeflow_trainer_gets_gpu_node_selector_tolerations_and_pull_secrets(tmp_path):
    pipeline, platform_spec = _compile(tmp_path, "kubeflow", "--image-pull-secret", "regcred")
    text = json.dumps(pipeline)
    for vertex_name in ("NVIDIA_TESLA", "machine_type", "google-cloud-pipeline-components", "CustomJob"):
        assert vertex_name not in text, vertex_name
    params = pipeline["root"]["inputDefinitions"]["parameters"]
    assert params["node_selector"]["parameterType"] == "STRUCT" and params["node_selector"]["defaultValue"] == {}
    assert params["tolerations"]["defaultValue"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    resources = pipeline["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "{{$.inputs.parameters['pipelinechannel--accelerator_type']}}"
    assert params["accelerator_type"]["defaultValue"] == "nvidia.com/gpu"
    executors = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    train = executors["exec-train"]
    assert train["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"] == "pipelinechannel--node_selector"
    assert train["tolerations"][0]["tolerationJson"]["componentInputParameter"] == "pipelinechannel--tolerations"
    assert set(executors) == set(pipeline["deploymentSpec"]["executors"])  # every task pulls with the secret
    assert all(e["imagePullSecret"] == [{"secretName": "regcred", "secretNameParameter": {"runtimeValue": {
        "constant": "regcred"}}}] for e in executors.values())


def test_platform_flags_are_refused_on_the_other_platform(tmp_path, capsys):
    gs = ["--annotations", "gs://b/a", "--images", "gs://b/i"]
    assert main(["compile", "-o", str(tmp_path / "p.yaml"), "--image-pull-secret", "regcred", *IMAGES]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--image-pull-secret regcred: a Kubernetes secret, for --target kubeflow" in err
    assert main(["submit", "--kfp-host", "http://127.0.0.1:9", *gs, *IMAGES, "--machine-type", "n1-standard-8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--machine-type: a parameter of the trainer on Vertex AI, which Kubeflow does not" in err
    argv = ["submit", "--vertex", "--project", "p", "--region", "r", "--pipeline-root", "gs://b/r", *gs, *IMAGES,
            "--node-selector", '{"pool": "gpu"}']
    assert main(argv) == 2
    assert "--node-selector: a parameter of the trainer on Kubeflow, which Vertex AI does not" in capsys.readouterr().err
    # a Vertex YAML compiled without a registry: its CustomJob's trainer image could not be pulled
    assert main(["compile", "-o", str(tmp_path / "bare.yaml"), "--image", "reg.example/odpipe:3"]) == 0
    argv = ["submit", "--vertex", "--project", "p", "--region", "r", "--pipeline-root", "gs://b/r", *gs,
            "--pipeline", str(tmp_path / "bare.yaml")]
    assert main(argv) == 2
    assert "--trainer-image odpipe-gpu:" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # not a flag of a local run
        main(["run", "--annotations", ".", "--images", ".", "--machine-type", "x"])
    assert "unrecognized arguments: --machine-type" in capsys.readouterr().err


def test_the_trainer_shares_its_tensorboard_logs_with_vertex(tmp_path, capsys):
    """In a CustomJob with a TensorBoard, Vertex AI uploads what the trainer leaves in AIP_TENSORBOARD_LOG_DIR."""
    from odpipe.tasks.model import share_tensorboard_logs

    model_dir = tmp_path / "model"
    for rel in ("train/events.out.tfevents.1.host", "validation/events.out.tfevents.2.host", "ckpt-1.index",
                "best/events.out.tfevents.3.host"):
        (model_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (model_dir / rel).write_bytes(b"e")
    assert share_tensorboard_logs(str(model_dir), str(tmp_path / "logs")) == 2
    assert sorted(p.relative_to(tmp_path / "logs").as_posix() for p in (tmp_path / "logs").rglob("*") if p.is_file()) == [
        "train/events.out.tfevents.1.host", "validation/events.out.tfevents.2.host"]
    assert "2 event file(s)" in capsys.readouterr().out
    assert share_tensorboard_logs(str(model_dir), "") == 0  # no TensorBoard: nothing copied
