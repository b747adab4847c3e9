"""The data fingerprint: has anything changed since the model in service was trained?

The first task of every pipeline run. It hashes the annotations' contents (small XMLs) and the
images' listing (names, sizes, modification times / object update times and, on gs://, the
objects' checksums; no image is read, so it stays cheap on buckets with 100k images):
`data_fingerprint`. The run's `fingerprint` also covers which model is in service (current.json of
the model home), so a promote or rollback changes it.
Every later task depends on the fingerprint, so KFP's cache hits exactly when nothing changed.

It also decides whether the rest of the run is needed at all (`changed`):
- the data is what the model in service was trained on -> unchanged;
- a challenger was already trained on this fingerprint and not blessed -> unchanged;
- otherwise (or with `force`) -> changed, and the pipeline trains.
"""

from __future__ import annotations

import concurrent.futures
import hashlib

from odpipe import model_home, storage
from odpipe.errors import UserError, first_line
from odpipe.voc import IMAGE_EXTENSIONS

DIGITS = 20  # 80 bits: no collision in any realistic history, and short enough for a registry label
READERS = 16  # annotations read at once (one request each on a bucket)


def _listing(folder: str, flag: str, suffixes: tuple[str, ...], skip_hidden: bool) -> list[tuple[str, int, float, str]]:
    try:
        files = storage.stat_checksums(folder, skip_hidden=skip_hidden, suffixes=suffixes)
    except OSError as err:
        raise UserError(f"{flag} {folder}: cannot list it ({err.strerror or err}); check the path and its permissions") from None
    if not files:
        raise UserError(f"{flag} {folder}: folder is empty or missing, or holds no {'/'.join(suffixes)} file; "
                        f"pass the folder of your labelImg {flag[2:]}")
    return files


def _hash(path: str) -> tuple[str, int]:
    """(SHA-256, size) of one annotation's content."""
    try:
        data = storage.read_bytes(path)
    except OSError as err:
        raise UserError(f"{path}: cannot read this annotation ({err.strerror or first_line(err)}); "
                        "check its permissions") from None
    return hashlib.sha256(data).hexdigest(), len(data)


def data_fingerprint(annotations: str, images: str) -> dict:
    """{"data_fingerprint", "annotation_files", "image_files", "bytes"} of the two folders.

    It covers what the pipeline reads: the XMLs the annotations stage reads (`.xml`, hidden ones
    skipped) by their content, each hashed (they are small, and an XML edited in place with its
    size and time restored is still new data); the images (IMAGE_EXTENSIONS) by what the listing
    gives (name, size, time, and on gs:// the object's CRC32C and MD5). Other files (`.DS_Store`,
    `notes.txt`) do not count."""
    xmls = _listing(annotations, "--annotations", (".xml",), skip_hidden=True)
    pictures = _listing(images, "--images", IMAGE_EXTENSIONS, skip_hidden=False)
    with concurrent.futures.ThreadPoolExecutor(READERS) as pool:  # a bucket answers reads in parallel
        hashes = list(pool.map(_hash, [storage.join(annotations, *rel.split("/")) for rel, *_ in xmls]))
    digest = hashlib.sha256(b"[annotations]\n")
    for (rel, *_), (sha, _) in zip(xmls, hashes):
        digest.update(f"{rel}\t{sha}\n".encode("utf-8", "surrogateescape"))
    digest.update(b"[images]\n")
    for rel, size, mtime, checksum in pictures:
        digest.update(f"{rel}\t{size}\t{mtime:.3f}\t{checksum}\n".encode("utf-8", "surrogateescape"))
    return {"data_fingerprint": digest.hexdigest()[:DIGITS], "annotation_files": len(xmls),
            "image_files": len(pictures), "bytes": sum(size for _, size in hashes) + sum(size for _, size, _, _ in pictures)}


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
