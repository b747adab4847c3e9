"""The publishing components: model home version, Vertex AI Model Registry.

See components/stages.py for the rules every component here follows.
"""

from typing import NamedTuple

from google_cloud_pipeline_components.types.artifact_types import VertexModel
from kfp.dsl import Artifact, Dataset, Input, Model, Output


def publish(
    exported: Input[Model],
    model: Input[Model],
    evaluation: Input[Dataset],
    plan: Input[Artifact],
    data_stats: Input[Dataset],
    published: Output[Model],
    model_home: str = "",
    run: str = "",
) -> NamedTuple("Published", [("version", str), ("saved_model", str)]):
    """Publishes a blessed export as a new version of the model home and makes it current.

    Args:
        exported: The export directory that passed evaluation.
        model: The model directory it was exported from (its training summary is recorded).
        evaluation: The evaluation folder (its metrics.json goes with the version).
        plan: The fingerprint task's plan (its fingerprints are recorded in the version).
        data_stats: The data report's folder; its data_stats.json is kept with the version (drift next time).
        published: What was published: the version's record (or, with no model home, the export).
        model_home: The model home (local or gs://); empty to publish to this run's output only.
        run: The pipeline run that made it.

    Returns:
        version: The new version ("" without a model home).
        saved_model: URI of the published SavedModel folder.
    """
    from odpipe.tasks import at, record
    from odpipe.tasks.publish import publish_task

    result = publish_task(at(exported), at(evaluation), at(published), model_home, at(plan), dict(model.metadata),
                          dict(exported.metadata), run, at(data_stats))
    return record(result, published=published)


def register(
    saved_model: str,
    version: str,
    evaluation: Input[Dataset],
    registry_model: str,
    project: str,
    location: str,
    model: Output[VertexModel],
    fingerprint: str = "",
    serving_image: str = "",
    model_home: str = "",
) -> str:
    """Uploads the published model as a new version of a Vertex AI Model Registry model.

    Args:
        saved_model: gs:// URI of the published SavedModel folder.
        version: Its model-home version (becomes the alias odpipe-vNNNN).
        evaluation: The evaluation folder (mAP for the labels).
        registry_model: Registry model id or resource name; created on the first upload.
        project: Google Cloud project of the registry.
        location: Vertex AI region of the registry.
        model: The registry model (google.VertexModel: resourceName), for GCPC's deploy and batch-prediction components.
        fingerprint: The run's fingerprint (a label).
        serving_image: Serving container: the project's image (runs `odpipe serve`) or a Vertex AI prebuilt
            TensorFlow image; empty for the prebuilt TensorFlow 2.15 CPU image.
        model_home: The model home; the registry entry is noted beside the version (registry.json), so a promote moves the default alias.

    Returns:
        The registry model version's resource name (MODEL@VERSION_ID).
    """
    from odpipe.tasks import at, record
    from odpipe.tasks.publish import register_task

    result = register_task(saved_model, version, at(evaluation), registry_model, project, location, fingerprint,
                           serving_image, model_home)
    return record(result, model=model)
