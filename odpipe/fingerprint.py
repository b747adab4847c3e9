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
from odpipe.champion import Champion
from odpipe.errors import UserError, first_line
from odpipe.settings import Settings
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
