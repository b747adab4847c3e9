"""The registry model chains: register's google.VertexModel output, the serving container, and
`odpipe models promote` moving the registry's default alias. Requests are the ones
google-cloud-aiplatform's ModelServiceClient would send (anonymous credentials, no network)."""

# no `from __future__ import annotations`: KFP reads the pipeline function's annotations as types

import json

import pytest
from fake_gapic import Operation
from kfp import compiler, dsl
from kfp.dsl import Dataset
from test_model_home import fake_export

from components import stages
from odpipe import model_home, registry
from odpipe.cli import main

MODEL = "projects/my-proj/locations/europe-west4/models/raccoon"


@pytest.fixture
def model_service(monkeypatch):
    import google.auth
    from google.api_core import exceptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.aiplatform_v1.services.model_service import ModelServiceClient
    from google.cloud.aiplatform_v1.types import model as gca_model
    from google.cloud.aiplatform_v1.types import model_service

    sent = {"upload": [], "aliases": [], "fail": None}
    for name in ("GOOGLE_CLOUD_PROJECT", "CLOUD_ML_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(google.auth, "default", lambda *a, **k: (AnonymousCredentials(), "default-project"))

    def get_model(self, request=None, name=None, **kwargs):
        name = name or request.name
        if not sent["upload"]:  # the first upload creates the model
            raise exceptions.NotFound(f"{name} not found")
        return gca_model.Model(name=name.split("@")[0], display_name="raccoon", version_id="3")

    def upload_model(self, request=None, **kwargs):
        sent["upload"].append(request)
        return Operation(model_service.UploadModelResponse(model=f"{request.parent}/models/raccoon",
                                                           model_version_id="3"))

    def merge_version_aliases(self, request=None, name=None, version_aliases=None, **kwargs):
        if sent["fail"]:
            raise sent["fail"]
        sent["aliases"].append((name, list(version_aliases)))
        return gca_model.Model(name=name.split("@")[0], version_aliases=version_aliases)

    monkeypatch.setattr(ModelServiceClient, "get_model", get_model)
    monkeypatch.setattr(ModelServiceClient, "upload_model", upload_model)
    monkeypatch.setattr(ModelServiceClient, "merge_version_aliases", merge_version_aliases)
    return sent


def test_serving_container_is_the_project_image_or_a_prebuilt_one(model_service):
    registry.upload_version("raccoon", "gs://b/home/versions/0001/export/saved_model", "my-proj", "europe-west4",
                            "0001", {"mAP": 0.5}, "f", serving_image="eu.gcr.io/p/odpipe:0.9")
    spec = model_service["upload"][0].model.container_spec
    assert spec.image_uri == "eu.gcr.io/p/odpipe:0.9" and list(spec.command) == ["odpipe", "serve"]
    assert spec.predict_route == "/predict" and spec.health_route == "/health"
    assert [p.container_port for p in spec.ports] == [8080]
    prebuilt = "europe-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"
    registry.upload_version("raccoon", "gs://b/home/versions/0001/export/saved_model", "my-proj", "europe-west4",
                            "0001", {"mAP": 0.5}, "f", serving_image=prebuilt)
    spec = model_service["upload"][1].model.container_spec
    assert spec.image_uri == prebuilt and not spec.command and not spec.predict_route  # TF Serving's own
    assert registry.default_serving_image("eu.gcr.io/p/odpipe:0.9") == "eu.gcr.io/p/odpipe:0.9"
    assert registry.default_serving_image("odpipe:0.9") == "" and registry.default_serving_image(None) == ""


def _home_with_two_versions(tmp_path):
    home = str(tmp_path / "home")
    for i in (1, 2):
        model_home.publish(home, fake_export(tmp_path / f"e{i}"), {"mAP": 0.1 * i}, {"fingerprint": f"f{i}"})
    return home


def test_register_outputs_a_vertex_model_and_notes_it_in_the_home(model_service, tmp_path, capsys):
    from google_cloud_pipeline_components.types.artifact_types import VertexModel

    home = _home_with_two_versions(tmp_path)
    version_json = (tmp_path / "home" / "versions" / "0002" / "version.json").read_text()
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / "metrics.json").write_text(json.dumps({"mAP": 0.2}))
    out = VertexModel(name="model", uri=str(tmp_path / "model"), metadata={})
    comps = stages.build("eu.gcr.io/p/odpipe:0.9", "eu.gcr.io/p/odpipe-gpu:0.9")
    value = comps.register.python_func(
        saved_model="gs://b/home/versions/0002/export/saved_model", version="0002",
        evaluation=Dataset(uri=str(evaluation)), registry_model="raccoon", project="my-proj", location="europe-west4",
        model=out, fingerprint="f2", serving_image="eu.gcr.io/p/odpipe:0.9", model_home=home)
    assert value == f"{MODEL}@3"
    # what GCPC's ModelUploadOp writes into its google.VertexModel output
    assert out.uri == f"https://europe-west4-aiplatform.googleapis.com/v1/{MODEL}"
    assert out.metadata["resourceName"] == MODEL and out.metadata["version_id"] == "3"
    noted = json.loads((tmp_path / "home" / "versions" / "0002" / registry.REGISTRY_FILE).read_text())
    assert noted == {"model": MODEL, "version_id": "3", "project": "my-proj", "location": "europe-west4",
                     "serving_image": "eu.gcr.io/p/odpipe:0.9"}
    assert (tmp_path / "home" / "versions" / "0002" / "version.json").read_text() == version_json  # never rewritten
    assert "registry entry noted in" in capsys.readouterr().out


def test_the_vertex_model_chains_into_gcpc_deploy_and_batch_prediction(tmp_path):
    from google_cloud_pipeline_components.v1.batch_predict_job import ModelBatchPredictOp
    from google_cloud_pipeline_components.v1.endpoint import EndpointCreateOp, ModelDeployOp

    comps = stages.build("eu.gcr.io/p/odpipe:0.9", "eu.gcr.io/p/odpipe-gpu:0.9")

    @dsl.pipeline(name="register-and-deploy")
    def chain(saved_model: str, version: str, evaluation_uri: str):
        evaluation = dsl.importer(artifact_uri=evaluation_uri, artifact_class=Dataset)
        registered = comps.register(saved_model=saved_model, version=version, evaluation=evaluation.output,
                                    registry_model="raccoon", project="my-proj", location="europe-west4")
        endpoint = EndpointCreateOp(project="my-proj", location="europe-west4", display_name="raccoon")
        ModelDeployOp(model=registered.outputs["model"], endpoint=endpoint.outputs["endpoint"],
                      dedicated_resources_machine_type="n1-standard-4", dedicated_resources_min_replica_count=1)
        ModelBatchPredictOp(model=registered.outputs["model"], job_display_name="prelabel", project="my-proj",
                            location="europe-west4", gcs_source_uris=["gs://b/new/*.jsonl"],
                            gcs_destination_output_uri_prefix="gs://b/predictions")

    compiler.Compiler().compile(chain, str(tmp_path / "chain.yaml"))  # the types match: it compiles


def test_promote_moves_the_registry_default_alias(model_service, tmp_path, capsys):
    from google.api_core import exceptions

    home = _home_with_two_versions(tmp_path)
    assert main(["models", "promote", home, "2"]) == 0  # never registered: nothing to move
    assert model_service["aliases"] == []
    registry.write_record(model_home.version_dir(home, "0001"), {"model": MODEL, "version_id": "7", "project": "my-proj",
                                         "location": "europe-west4"})
    assert main(["models", "promote", home, "1"]) == 0
    assert model_service["aliases"] == [(f"{MODEL}@7", ["default"])]
    assert f"{MODEL}@7 is the registry's default version" in capsys.readouterr().out

    model_service["fail"] = exceptions.PermissionDenied("aiplatform.models.update denied")
    assert main(["models", "promote", home, "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the registry's default alias was not moved (403 aiplatform.models.update" in err
    assert "current.json already names version 0001" in err
    (tmp_path / "home" / "versions" / "0001" / registry.REGISTRY_FILE).write_text("{oops")
    assert main(["models", "promote", home, "1"]) == 2
    assert "registry.json: not JSON" in capsys.readouterr().err
