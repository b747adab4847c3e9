"""The data fingerprint: has anything changed since the model in service was trained?

The first task of every pipeline run. It lists the annotations and images folders (names, sizes
and modification times / object update times; no file is read, so it stays cheap on buckets with
100k images) and hashes the listing (`data_fingerprint`). The run's `fingerprint` also covers
which model is in service (current.json of the model home), so a promote or rollback changes it.
Every later task depends on the fingerprint, so KFP's cache hits exactly when nothing changed.

It also decides whether the rest of the run is needed at all (`changed`):
- the data is what the model in service was trained on -> unchanged;
- a challenger was already trained on this fingerprint and not blessed -> unchanged;
- otherwise (or with `force`) -> changed, and the pipeline trains.
"""

from __future__ import annotations

import hashlib

from odpipe import model_home, storage
from odpipe.champion import Champion
from odpipe.settings import Settings
from odpipe.errors import UserError

DIGITS = 20  # 80 bits: no collision in any realistic history, and short enough for a registry label


def _listing(folder: str, flag: str) -> list[tuple[str, int, float]]:
    try:
        files = storage.stat_files(folder)
    except OSError as err:
        raise UserError(f"{flag} {folder}: cannot list it ({err.strerror or err}); check the path and its permissions") from None
    if not files:
        raise UserError(f"{flag} {folder}: folder is empty or missing; pass the folder of your labelImg {flag[2:]}")
    return files


def data_fingerprint(annotations: str, images: str) -> dict:
    """{"data_fingerprint", "annotation_files", "image_files", "bytes"} of the two folders."""
    digest = hashlib.sha256()
    counts = {}
    total = 0
    for name, folder in (("annotations", annotations), ("images", images)):
        files = _listing(folder, f"--{name}")
        counts[name] = len(files)
        digest.update(f"[{name}]\n".encode())
        for rel, size, mtime in files:
            digest.update(f"{rel}\t{size}\t{mtime:.3f}\n".encode("utf-8", "surrogateescape"))
            total += size
    return {"data_fingerprint": digest.hexdigest()[:DIGITS], "annotation_files": counts["annotations"],
            "image_files": counts["images"], "bytes": total}


def plan(annotations: str, images: str, home: str = "", force: bool = False,
         settings: Settings | None = None) -> dict:
    """The run's plan: its `fingerprint` (data + settings + the model in service), whether it must
    train (`changed`, with a one-line `message`) and the `champion` (a Champion; falsy when none)."""
    data = data_fingerprint(annotations, images)
    settings = settings or Settings()
    shaped = settings.fingerprint()
    champ = Champion.of_home(home)
    fingerprint = hashlib.sha256(f"{data['data_fingerprint']}|{champ.version or 'none'}|{shaped}".encode()).hexdigest()[:DIGITS]
    attempt = model_home.read_attempt(home, fingerprint) if home else None
    changed, message = _verdict(home, data, shaped, champ, attempt, force, fingerprint)
    return {**data, "settings_fingerprint": shaped, "fingerprint": fingerprint, "changed": changed,
            "message": message, "champion": champ}


NOT_COMPARED = "min_map and margin are not compared; force=true retrains anyway"


def _verdict(home: str, data: dict, shaped: str, champ: Champion, attempt: dict | None, force: bool,
             fingerprint: str) -> tuple[bool, str]:
    files = f"{data['annotation_files']} annotation files, {data['image_files']} images"
    same_data = bool(champ) and champ.data_fingerprint == data["data_fingerprint"]
    same_settings = not champ.settings_fingerprint or champ.settings_fingerprint == shaped
    if force:
        return True, f"retraining on request (force): {files}, fingerprint {fingerprint}"
    if same_data and same_settings:
        return False, (f"data and settings unchanged since version {champ.version} was published ({champ.since}): "
                       f"no new model published ({NOT_COMPARED})")
    if attempt:
        reasons = "; ".join(attempt.get("reasons") or []) or "not blessed"
        return False, (f"data unchanged since {attempt.get('date')}, when a model trained on it was not blessed "
                       f"({reasons}): no new model published ({NOT_COMPARED})")
    if same_data:
        return True, f"settings changed since version {champ.version} was trained: retraining on {files}"
    if not champ:
        return True, f"new data: {files}, fingerprint {fingerprint}; no model in service yet"
    seen = [v["version"] for v in model_home.list_versions(home)
            if v.get("complete") and v.get("data_fingerprint") == data["data_fingerprint"]]
    if seen:  # e.g. after a rollback: this data is not new, the model in service just was not trained on it
        return True, (f"data unchanged since version {seen[-1]} was trained, but version {champ.version} is in "
                      f"service ({champ.since}): retraining on {files} against it")
    return True, f"new data: {files}, fingerprint {fingerprint}; champion is version {champ.version}"
