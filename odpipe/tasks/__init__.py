"""The pipeline's tasks as plain functions: one per KFP component, each with its own tests.

A component in `components/` is a typed signature over exactly one call of a function here (the
way google-cloud-pipeline-components splits `component.py` from its launcher). A task function
takes plain values and the *locations* of its artifacts, does the work through the stage
modules, and returns a `Result`: the metadata of each output artifact (by the component's output
name) and the component's return value. `record(result, **artifacts)` copies the metadata onto
the KFP artifacts and returns the value, so a component body is one line.

Where an artifact lives (`at`): its `gs://` URI on Vertex AI (Beam, Dataflow and TensorFlow speak
gs:// directly), and otherwise its local `.path`: on Kubeflow the launcher hands `minio://` or
`s3://` URIs, which no file layer here speaks, with a local path it syncs; under the kfp local
runner the two are the same.

Modules in data-flow order: `data` (fingerprint, csv, split, label map, records), `model`
(train, export, evaluate), `publish` (model home, Vertex Model Registry).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


def at(artifact: Any) -> str:
    """The location a task reads or writes an artifact at: `gs://` URI, else the local path."""
    uri = str(getattr(artifact, "uri", "") or "")
    return uri if uri.startswith("gs://") else str(artifact.path)


def plain(value: Any) -> Any:
    """`value` as JSON-compatible data (what KFP metadata can hold): paths and numbers as text/numbers."""
    return json.loads(json.dumps(value, default=str))


def to_json(doc: Any) -> str:
    """`doc` as the JSON text of a task's file (indented, one trailing newline)."""
    return json.dumps(plain(doc), indent=1) + "\n"


def scalars(doc: dict) -> dict:
    """The top-level numbers, strings and booleans of `doc` (a summary fit for artifact metadata)."""
    return {k: v for k, v in plain(doc).items() if not isinstance(v, (dict, list))}


@dataclass
class Result:
    """What a task produced: metadata per output artifact name, and the component's return value."""

    metadata: dict[str, dict] = field(default_factory=dict)
    value: Any = None
    uris: dict[str, str] = field(default_factory=dict)  # outputs that name a resource elsewhere (a registry model)


def record(result: Result, **artifacts: Any) -> Any:
    """Copies each output's metadata (and URI, where the task gives one) onto the KFP artifact of
    that name; returns the task's value."""
    for name, artifact in artifacts.items():
        artifact.metadata.update(plain(result.metadata.get(name, {})))
        if name in result.uris:
            artifact.uri = result.uris[name]
    return result.value
