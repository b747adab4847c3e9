"""Vertex AI Model Registry: a blessed model becomes a new *version* of one registry model.

`upload_version` uploads `HOME/versions/NNNN/export/saved_model` (a gs:// folder) with a serving
container, as a new version of the parent model `registry_model` (created on the first upload),
marks it the default version and gives it the alias `odpipe-vNNNN`, with labels mAP and
fingerprint — what `ModelUploadOp` of Google Cloud Pipeline Components does, through the
google-cloud-aiplatform SDK that odpipe already pins.

The serving container is the project's own CPU image running `odpipe serve` (Vertex AI's
custom-container contract: port 8080, /predict, /health, the model at AIP_STORAGE_URI), or a Vertex
AI prebuilt TensorFlow image (`PREBUILT_PREFIX`), which runs TensorFlow Serving on the SavedModel.

The version's registry entry is written beside it in the model home (`registry.json`), so
`odpipe models promote` moves the registry's `default` alias along with current.json.
"""

from __future__ import annotations

import json
import re

from odpipe import storage
from odpipe.errors import UserError, first_line

# Imported inside functions: google-cloud-aiplatform and google.api_core (seconds) only when the registry is called.

# The fallback when no project serving image is given: Vertex AI's newest prebuilt TensorFlow CPU
# prediction container that google-cloud-aiplatform lists. Checked: TensorFlow 2.15.1 (in its own
# environment) loads a TensorFlow 2.20 retinanet-mobilenetv2 export and returns the same detections
# as 2.20; the container's TensorFlow Serving binary itself was not run (notes/README-platform.md).
# The project's own image (`odpipe serve`, same TensorFlow as the export) is the default.
SERVING_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"
PREBUILT_PREFIX = "-docker.pkg.dev/vertex-ai/prediction/"
SERVE_COMMAND = ["odpipe", "serve"]  # the CPU image's entrypoint is Beam's worker boot: name the command
SERVE_PORT, PREDICT_ROUTE, HEALTH_ROUTE = 8080, "/predict", "/health"
REGISTRY_FILE = "registry.json"  # in HOME/versions/NNNN/: the registry model version of that version


def label_value(value) -> str:
    """A Vertex label value: lowercase letters, digits, '-' and '_', at most 63 characters."""
    text = f"{value:.4f}" if isinstance(value, float) else str(value)
    return re.sub(r"[^a-z0-9_-]", "_", text.lower())[:63]


def default_serving_image(image: str | None) -> str:
    """The serving image a pipeline compiled with component image `image` defaults to: that image
    (it has `odpipe serve`) when it names a registry host, else "" (the prebuilt fallback)."""
    host = image.split("/", 1)[0] if image and "/" in image else ""
    return image if host and ("." in host or ":" in host or host == "localhost") else ""


def serving_container(image: str) -> dict:
    """`Model.upload`'s serving-container arguments for `image`: a prebuilt TensorFlow image needs
    only its URI; the project's image runs `odpipe serve` on Vertex AI's routes."""
    if PREBUILT_PREFIX in image:
        return {"serving_container_image_uri": image}
    return {"serving_container_image_uri": image, "serving_container_command": SERVE_COMMAND,
            "serving_container_predict_route": PREDICT_ROUTE, "serving_container_health_route": HEALTH_ROUTE,
            "serving_container_ports": [SERVE_PORT]}


def model_uri(resource_name: str, location: str) -> str:
    """The REST URI of a registry model, as GCPC's ModelUploadOp puts it in its google.VertexModel artifact."""
    return f"https://{location}-aiplatform.googleapis.com/v1/{resource_name}"


def upload_version(
    registry_model: str,
    saved_model_uri: str,
    project: str,
    location: str,
    version: str,
    metrics: dict,
    fingerprint: str,
    serving_image: str = SERVING_IMAGE,
    credentials=None,
) -> dict:
    """Uploads one model version; returns {"model", "version_id", "aliases"}.

    `registry_model` is a model id ("raccoon-detector") or a full resource name
    ("projects/P/locations/L/models/ID"); a model that does not exist yet is created."""
    from google.api_core import exceptions
    from google.cloud import aiplatform

    if not str(saved_model_uri).startswith("gs://"):
        raise UserError(f"--registry-model {registry_model}: the Model Registry serves from Cloud Storage; "
                        f"use a gs:// --model-home (the model is at {saved_model_uri})")
    if not project or not location:
        raise UserError(f"--registry-model {registry_model}: needs the Vertex project and region "
                        "(pipeline parameters registry_project, registry_location)")
    model_id = registry_model.rsplit("/", 1)[-1]
    # the SDK's global project: else it looks the project up from the environment on every call
    aiplatform.init(project=project, location=location, credentials=credentials)
    try:
        parent = aiplatform.Model(model_name=registry_model, project=project, location=location,
                                  credentials=credentials).resource_name
    except exceptions.NotFound:
        parent = None  # the first version creates the registry entry
    alias = f"odpipe-v{version}"
    labels = {"odpipe_version": label_value(version), "fingerprint": label_value(fingerprint),
              "map": label_value(float(metrics["mAP"])) if isinstance(metrics.get("mAP"), (int, float)) else "n_a"}
    model = aiplatform.Model.upload(
        display_name=model_id,
        artifact_uri=saved_model_uri,
        **serving_container(serving_image),
        parent_model=parent,
        model_id=None if parent else model_id,
        is_default_version=True,
        version_aliases=[alias],
        version_description=f"odpipe model home version {version}, mAP {metrics.get('mAP')}, fingerprint {fingerprint}",
        labels=labels,
        project=project,
        location=location,
        credentials=credentials,
        sync=True,
    )
    return {"model": model.resource_name, "version_id": model.version_id, "aliases": ["default", alias],
            "labels": labels, "project": project, "location": location, "serving_image": serving_image}


def write_record(version_dir: str, uploaded: dict) -> str:
    """Notes, in a model home version's folder, the registry model version it was uploaded as
    (`upload_version`'s result); never touches version.json. Returns the path."""
    path = storage.join(version_dir, REGISTRY_FILE)
    keep = ("model", "version_id", "project", "location", "serving_image")
    storage.write_text(path, json.dumps({k: uploaded.get(k) for k in keep}, indent=1) + "\n")
    return path


def read_record(version_dir: str) -> dict | None:
    """The registry entry of a model home version's folder (None when it was never registered)."""
    path = storage.join(version_dir, REGISTRY_FILE)
    if not storage.exists(path):
        return None
    try:
        doc = json.loads(storage.read_text(path))
    except ValueError as err:
        raise UserError(f"{path}: not JSON ({first_line(err)}); it notes the version's registry model: "
                        "delete it, or restore it from the register task's output") from None
    if not isinstance(doc, dict) or not doc.get("model") or not doc.get("version_id"):
        raise UserError(f"{path}: expected {{\"model\": RESOURCE, \"version_id\": ID}}; delete it or restore it")
    return doc


def move_default_alias(version_dir: str, version: str, credentials=None) -> dict | None:
    """Moves the registry's `default` alias to the registry version of the model home version in
    `version_dir`, when it has one (`registry.json`); returns that entry, else None (nothing to move)."""
    from google.cloud import aiplatform

    record = read_record(version_dir)
    if record is None:
        return None
    registry = aiplatform.models.ModelRegistry(record["model"], location=record.get("location"),
                                              project=record.get("project"), credentials=credentials)
    try:
        registry.add_version_aliases(["default"], version=str(record["version_id"]))
    except Exception as err:  # noqa: BLE001 - any API or auth error: current.json has moved already
        raise UserError(f"{record['model']}@{record['version_id']}: the registry's default alias was not moved "
                        f"({first_line(err, 160)}); current.json already names version {version}: fix access and "
                        "run the same `odpipe models promote` again") from None
    return record
