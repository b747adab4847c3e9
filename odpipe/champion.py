"""The model in service, as one object: what a run compares against, extends and warm-starts from.

The fingerprint task reads the model home's `current.json` once per run and writes this object
as one pipeline artifact (`champion.json`); the label map, train, evaluate and publish tasks read
it back. "No model in service" is an object too (`Champion.none()`, falsy), never "" strings.

    Champion(version="0002", export="HOME/versions/0002/export", checkpoint=".../checkpoint/ckpt-800",
             label_map=".../label_map.pbtxt", metrics={"mAP": 0.61, ...}, data_fingerprint="...")
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from odpipe import model_home, storage

FILE = "champion.json"
DATA_STATS = "data_stats.json"  # odpipe.data_report.STATS_NAME, as stored in a model home version


def _data_stats(version_dir: str) -> str:
    path = storage.join(version_dir, DATA_STATS)
    return path if storage.exists(path) else ""


@dataclass(frozen=True)
class Champion:
    """The model in service of a model home (`version` None: there is none)."""

    version: str | None = None
    home: str = ""
    export: str = ""
    checkpoint: str = ""
    label_map: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    settings_fingerprint: str = ""
    since: str = ""
    data_stats: str = ""  # the data_stats.json of the data it was trained on (drift), when recorded

    @classmethod
    def none(cls, home: str = "") -> Champion:
        return cls(home=home)

    def __bool__(self) -> bool:
        return self.version is not None

    @classmethod
    def of_home(cls, home: str) -> Champion:
        """The model in service of `home` (one read of current.json); none for an empty or no home."""
        found = model_home.champion(home) if home else None
        if not found:
            return cls.none(home)
        return cls(
            version=found["version"],
            home=str(home).rstrip("/"),
            export=found["export"],
            checkpoint=found.get("checkpoint") or "",
            label_map=found["label_map"],
            metrics={k: found.get(k) for k in model_home.HEADLINE},
            data_fingerprint=found.get("data_fingerprint") or "",
            settings_fingerprint=found.get("settings_fingerprint") or "",
            since=found.get("created") or found.get("since") or "",
            data_stats=_data_stats(found["dir"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Champion:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})

    def save(self, path: str) -> str:
        """Writes champion.json at `path` (a file path, or a folder that gets champion.json)."""
        storage.write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str) -> Champion:
        return cls.from_dict(json.loads(storage.read_text(path)))

    @classmethod
    def read(cls, source: Champion | str | None) -> Champion:
        """A Champion from itself, from the path of its champion.json, or none for None/""."""
        if isinstance(source, Champion):
            return source
        return cls.load(source) if source else cls.none()

    def describe(self) -> str:
        return f"version {self.version}" if self else "none"
