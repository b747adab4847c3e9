"""Vertex AI Model Registry: a blessed model becomes a new *version* of one registry model.

`upload_version` uploads `HOME/versions/NNNN/export/saved_model` (a gs:// folder) with a prebuilt
TensorFlow serving container, as a new version of the parent model `registry_model` (created on
the first upload), marks it the default version and gives it the alias `odpipe-vNNNN`, with
labels mAP and fingerprint — what `ModelUploadOp` of Google Cloud Pipeline Components does, through
the google-cloud-aiplatform SDK that odpipe already pins.
"""

from __future__ import annotations

import re

from odpipe.errors import UserError

# Vertex AI's prebuilt TensorFlow 2 CPU prediction container (the registry serves SavedModels with it).
SERVING_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"
# Any other image is taken to be odpipe's own (images/cpu.Dockerfile), served by `odpipe serve`:
# class names, pixel boxes and the score threshold, at the TensorFlow that exported the model.
SERVE_PORT = 8080


def serving_container(image: str) -> dict:
    """Model.upload arguments for serving with `image`: a Vertex prebuilt image needs none; the
    odpipe image runs `odpipe serve` (EXPORT from AIP_STORAGE_URI, routes from AIP_*_ROUTE)."""
    if "/vertex-ai/prediction/" in image:
        return {"serving_container_image_uri": image}
    return {"serving_container_image_uri": image, "serving_container_command": ["odpipe", "serve"],
            "serving_container_ports": [SERVE_PORT], "serving_container_predict_route": "/predict",
            "serving_container_health_route": "/health"}


def label_value(value) -> str:
    """A Vertex label value: lowercase letters, digits, '-' and '_', at most 63 characters."""
    text = f"{value:.4f}" if isinstance(value, float) else str(value)
    return re.sub(r"[^a-z0-9_-]", "_", text.lower())[:63]


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
            "labels": labels}
