"""The publishing tasks: a blessed export becomes a model home version (or the run's own copy), then
optionally a Vertex AI Model Registry version."""

from __future__ import annotations

import json
from typing import NamedTuple

from odpipe import model_home, storage
from odpipe.champion import DATA_STATS
from odpipe.tasks import Result, scalars

# Imported inside functions: odpipe.registry (google-cloud-aiplatform: seconds) only in the register task.


class Published(NamedTuple):
    """The publish component's return value."""

    version: str
    saved_model: str


def publish_task(export_dir: str, evaluation_dir: str, published_path: str, model_home_dir: str = "",
                 plan: dict | str | None = None, training: dict | None = None, export: dict | None = None,
                 run: str = "", data_stats: str = "") -> Result:
    """Publishes `export_dir` as the next version of the model home (then current.json), or, without
    a home, copies it to the run's own output. `plan` is the fingerprint task's plan.json;
    `data_stats` the data report's folder (its data_stats.json goes with the version: drift)."""
    if not model_home_dir:
        copied = storage.copy_tree(export_dir, published_path)
        return Result({"published": {"files": copied, "source": export_dir}},
                      Published("", storage.join(published_path, "saved_model")))
    plan = json.loads(storage.read_text(plan)) if isinstance(plan, str) and plan else (plan or {})
    metrics = json.loads(storage.read_text(storage.join(evaluation_dir, "metrics.json")))
    export = export or {}
    provenance = {
        "fingerprint": plan.get("fingerprint", ""),
        "data_fingerprint": plan.get("data_fingerprint", ""),
        "settings_fingerprint": plan.get("settings_fingerprint", ""),
        "run": run,
        "config": "export/config.yaml",
        "training": scalars(training or {}),
        "export": scalars(export),
        "champion": (metrics.get("champion") or {}).get("version"),
    }
    stats = storage.join(data_stats, DATA_STATS) if data_stats else ""
    extra = {DATA_STATS: stats} if stats and storage.exists(stats) else None
    current = model_home.publish(model_home_dir, export_dir, metrics, provenance, checkpoint=export.get("checkpoint"),
                                 extra=extra)
    record = {**current, "home": model_home_dir}
    storage.write_text(published_path, json.dumps(record, indent=1) + "\n")
    print(f"published version {current['version']} to {model_home_dir} (current.json updated)")
    saved_model = storage.join(model_home.version_dir(model_home_dir, current["version"]), "export", "saved_model")
    return Result({"published": record}, Published(current["version"], saved_model))


def register_task(saved_model: str, version: str, evaluation_dir: str, registry_model: str, project: str,
                  location: str, fingerprint: str = "", serving_image: str = "", home: str = "") -> Result:
    """Uploads the published SavedModel as a new version of a Vertex AI Model Registry model; its
    entry goes beside the model home version (registry.json: `odpipe models promote` moves the
    `default` alias with it). Output `model` is GCPC's google.VertexModel (resourceName, REST URI)."""
    from odpipe import registry

    if not serving_image:
        print(f"serving image: none given; {registry.SERVING_IMAGE} (Vertex AI's prebuilt TensorFlow "
              "Serving 2.15; pass serving_image REGISTRY/odpipe:VERSION to serve with `odpipe serve`)")
    metrics = json.loads(storage.read_text(storage.join(evaluation_dir, "metrics.json")))
    result = registry.upload_version(registry_model, saved_model, project, location, version or "0", metrics,
                                     fingerprint, serving_image=serving_image or registry.SERVING_IMAGE)
    print(f"registered {result['model']}@{result['version_id']} (aliases {', '.join(result['aliases'])}; "
          f"serving image {result['serving_image']})")
    if home and version:
        print(f"registry entry noted in {registry.write_record(model_home.version_dir(home, version), result)}")
    versioned = f"{result['model']}@{result['version_id']}"
    metadata = {"resourceName": result["model"], "version_id": result["version_id"], "aliases": result["aliases"],
                "serving_image": result["serving_image"]}
    return Result({"model": metadata}, versioned, uris={"model": registry.model_uri(result["model"], location)})
