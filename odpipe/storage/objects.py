"""Object-level calls of odpipe.storage that Beam's `FileSystems` does not offer: an exclusive
create (the way two writers agree on who owns a name), a listing with the checksums a bucket
gives for free, and the clean-up of temporary files left by killed writers.

On `gs://` these go through the google-cloud-storage client that Beam's `GcsIO` holds (its public
`client` attribute, which honours `STORAGE_EMULATOR_HOST`).
"""

from __future__ import annotations

import errno
import os
import time

from odpipe.storage import is_remote, makedirs
from odpipe.storage.walker import filter_listing, walk

# Beam's Cloud Storage client and google.api_core are imported inside the functions that reach a bucket:
# about a second of start-up that local paths never need.

STALE_TEMP_S = 600.0  # a temporary file this old was left by a killed writer (they live for milliseconds)


def _bucket_and_name(uri: str) -> tuple[str, str]:
    """("bucket", "key") of `gs://bucket/key`."""
    rest = str(uri).split("://", 1)[1]
    bucket, _, name = rest.partition("/")
    return bucket, name


def _client():
    from apache_beam.io.gcp.gcsio import GcsIO

    return GcsIO().client


def create_exclusive(path: str, text: str, encoding: str = "utf-8") -> None:
    """Create `path` holding `text` only if nothing exists there yet; else FileExistsError, and
    the existing file is untouched. Locally an exclusive create (O_CREAT | O_EXCL); on `gs://` an
    upload with the precondition `if_generation_match=0` (the object must not exist), so of two
    writers racing for one name exactly one wins, on any number of machines."""
    path = str(path)
    data = text.encode(encoding)
    if not is_remote(path):
        makedirs(os.path.dirname(os.path.abspath(path)))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return
    from google.api_core.exceptions import PreconditionFailed

    bucket, name = _bucket_and_name(path)
    try:
        _client().bucket(bucket).blob(name).upload_from_string(data, if_generation_match=0)
    except PreconditionFailed as err:
        raise FileExistsError(errno.EEXIST, "already exists", path) from err


def stat_checksums(folder: str, skip_hidden: bool = False, suffixes=None) -> list[tuple[str, int, float, str]]:
    """(relative path, size, modification time, checksum) of every file under `folder` that the
    one walker keeps (same `skip_hidden`, `suffixes`), sorted, from the listing alone: no file is
    opened. The checksum is the object's "crc32c:...,md5:..." on `gs://` (what the listing gives),
    "" locally; on `gs://` the time is the object's last update."""
    root = str(folder).rstrip("/")
    if not is_remote(root):
        found = []
        for rel in walk(root, skip_hidden=skip_hidden, suffixes=suffixes).files:
            st = os.stat(os.path.join(root, *rel.split("/")))
            found.append((rel, st.st_size, st.st_mtime, ""))
        return found
    bucket, name = _bucket_and_name(root)
    prefix = name + "/" if name else ""
    blobs = {b.name[len(prefix) :]: b for b in _client().list_blobs(bucket, prefix=prefix)}
    kept = filter_listing(root, list(blobs), skip_hidden=skip_hidden, suffixes=suffixes).files
    out = []
    for rel in kept:
        blob = blobs[rel]
        updated = blob.updated.timestamp() if blob.updated else 0.0
        out.append((rel, int(blob.size or 0), updated, f"crc32c:{blob.crc32c or ''},md5:{blob.md5_hash or ''}"))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temps(folder: str, stem: str) -> list[str]:
    """Delete `.STEM.PID.tmp` files in a local `folder` whose writer is dead (no such process
    here) or that are older than STALE_TEMP_S (a writer on another machine); returns them."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        head, _, pid = name[: -len(".tmp")].rpartition(".") if name.endswith(".tmp") else ("", "", "")
        if head != f".{stem}" or not pid.isdigit() or int(pid) == os.getpid():
            continue
        path = os.path.join(folder, name)
        try:
            stale = not _alive(int(pid)) or time.time() - os.path.getmtime(path) > STALE_TEMP_S
            if stale:
                os.remove(path)
                removed.append(path)
        except FileNotFoundError:  # another cleaner was first
            continue
    return removed
