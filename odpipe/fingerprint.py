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


def plan(annotations: str, images: str, home: str = "", force: bool = False) -> dict:
    """The run's fingerprint, whether it must train (`changed`, with a one-line `message`) and the
    champion (the model in service: export, label map, checkpoint; "" fields when there is none)."""
    data = data_fingerprint(annotations, images)
    current = model_home.read_current(home) if home else None
    served = f"{current['version']}" if current else "none"
    fingerprint = hashlib.sha256(f"{data['data_fingerprint']}|{served}".encode()).hexdigest()[:DIGITS]
    champ = model_home.champion(home) if current else None
    attempt = model_home.read_attempt(home, fingerprint) if home else None
    files = f"{data['annotation_files']} annotation files, {data['image_files']} images"
    if force:
        changed, message = True, f"retraining on request (force): {files}, fingerprint {fingerprint}"
    elif current and current.get("data_fingerprint") == data["data_fingerprint"]:
        changed = False
        message = (f"data unchanged since version {current['version']} was published "
                   f"({champ.get('created') or current.get('since')}): no new model published")
    elif attempt:
        changed = False
        reasons = "; ".join(attempt.get("reasons") or []) or "not blessed"
        message = (f"data unchanged since {attempt.get('date')}, when a model trained on it was not blessed "
                   f"({reasons}): no new model published; pass force=true to retrain anyway")
    else:
        changed = True
        message = (f"new data: {files}, fingerprint {fingerprint}; "
                   + (f"champion is version {current['version']}" if current else "no model in service yet"))
    return {
        **data,
        "fingerprint": fingerprint,
        "changed": changed,
        "message": message,
        "champion_version": current["version"] if current else "",
        "champion": champ["export"] if champ else "",
        "champion_label_map": champ["label_map"] if champ else "",
        "champion_checkpoint": champ["checkpoint"] if champ else "",
    }
