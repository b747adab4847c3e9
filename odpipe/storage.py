"""Paths that may be local or on a bucket (`gs://...`).

Everything goes through Apache Beam's file systems, which speak to Cloud Storage with the
google-cloud-storage client, so `STORAGE_EMULATOR_HOST` (the tests' local emulator) is honoured.
TensorFlow's own `gs://` support does not honour that variable; use these helpers for data I/O.
"""

from __future__ import annotations

import os
import posixpath
from typing import IO


def is_remote(path: str) -> bool:
    """True for URIs such as `gs://bucket/key`."""
    return "://" in str(path)


def join(base: str, *parts: str) -> str:
    base = str(base)
    if is_remote(base):
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def use_emulator_anonymously() -> None:
    """With `STORAGE_EMULATOR_HOST` set, let Beam's GCS file system talk to it without credentials.

    Beam otherwise looks for Google application-default credentials and retries for ~20 s per
    process when there are none; an emulator needs none. Called before every bucket access and
    when this module is imported (so Beam's worker processes, which import it, do the same).
    """
    if not os.environ.get("STORAGE_EMULATOR_HOST"):
        return
    try:
        from apache_beam.internal.gcp import auth
    except ImportError:  # pragma: no cover - beam without the gcp extra
        return
    creds = getattr(auth, "_Credentials", None)
    if creds is not None and not getattr(creds, "_credentials_init", True):
        with creds._credentials_lock:
            creds._credentials = None
            creds._credentials_init = True


def _fs():
    from apache_beam.io.filesystems import FileSystems

    use_emulator_anonymously()
    return FileSystems


def _not_found(path: str, err: Exception) -> bool:
    text = f"{type(err).__name__} {err}"
    return "NotFound" in text or "404" in text or "Not found" in text or "No such file" in text


def open_read(path: str) -> IO[bytes]:
    """A binary file object for reading a local path or a `gs://` URI."""
    path = str(path)
    if not is_remote(path):
        return open(path, "rb")
    from apache_beam.io.filesystem import CompressionTypes

    try:
        return _fs().open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as err:
        if _not_found(path, err):
            raise FileNotFoundError(f"{path}: not found") from err
        raise


def open_write(path: str) -> IO[bytes]:
    """A binary file object for writing; local parent folders are created."""
    path = str(path)
    if not is_remote(path):
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        return open(path, "wb")
    from apache_beam.io.filesystem import CompressionTypes

    return _fs().create(path, compression_type=CompressionTypes.UNCOMPRESSED)


def read_bytes(path: str) -> bytes:
    with open_read(path) as f:
        return f.read()


def read_text(path: str, encoding: str = "utf-8") -> str:
    return read_bytes(path).decode(encoding)


def write_bytes(path: str, data: bytes) -> None:
    with open_write(path) as f:
        f.write(data)


def write_text(path: str, text: str, encoding: str = "utf-8") -> None:
    write_bytes(path, text.encode(encoding))


def exists(path: str) -> bool:
    path = str(path)
    if not is_remote(path):
        return os.path.exists(path)
    return _fs().exists(path)


def size(path: str) -> int:
    """Size in bytes of a file or object; FileNotFoundError when there is none."""
    path = str(path)
    if not is_remote(path):
        return os.path.getsize(path)
    found = _fs().match([path])[0].metadata_list
    if not found:
        raise FileNotFoundError(f"{path}: not found")
    return found[0].size_in_bytes


def glob(pattern: str) -> list[str]:
    """Sorted paths matching a glob pattern (local or `gs://`)."""
    pattern = str(pattern)
    if not is_remote(pattern):
        import glob as _glob

        return sorted(_glob.glob(pattern, recursive=True))
    result = _fs().match([pattern])[0]
    return sorted(m.path for m in result.metadata_list)


def list_files(folder: str) -> list[str]:
    """Relative paths (with `/`) of every file under `folder`, recursively, sorted."""
    root = str(folder).rstrip("/")
    found = []
    for path in glob(root + "/**"):
        rel = path[len(root) + 1 :]
        if rel and not rel.endswith("/") and (is_remote(path) or os.path.isfile(path)):
            found.append(rel if is_remote(path) else rel.replace(os.sep, "/"))
    return found


def copy_tree(source: str, destination: str, files: list[str] | None = None) -> int:
    """Copy the files under `source` (`files`, relative paths; default all) to the same relative
    paths under `destination`, streaming (local or `gs://` on either side); returns the count."""
    import shutil

    source = str(source).rstrip("/")
    files = list_files(source) if files is None else files
    for rel in files:
        with open_read(join(source, *rel.split("/"))) as src, open_write(join(destination, *rel.split("/"))) as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
    return len(files)


def makedirs(path: str) -> None:
    """Create a local folder (buckets have no folders; nothing to do there)."""
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)


def delete(paths: list[str]) -> None:
    if paths:
        _fs().delete(list(paths))


def rename(sources: list[str], destinations: list[str]) -> None:
    if sources:
        _fs().rename(list(sources), list(destinations))


use_emulator_anonymously()


def stat_files(folder: str) -> list[tuple[str, int, float]]:
    """(relative path with `/`, size in bytes, modification time) of every file under `folder`,
    recursively, sorted — from the listing alone (no file is opened: cheap on 100k-object buckets;
    on gs:// the time is the object's last update, which a re-upload changes)."""
    root = str(folder).rstrip("/")
    if not is_remote(root):
        found = []
        for path in glob(root + "/**"):
            if os.path.isfile(path):
                st = os.stat(path)
                found.append((os.path.relpath(path, root).replace(os.sep, "/"), st.st_size, st.st_mtime))
        return sorted(found)
    result = _fs().match([root + "/**"])[0]
    return sorted((m.path[len(root) + 1 :], m.size_in_bytes, float(m.last_updated_in_seconds or 0.0))
                  for m in result.metadata_list if not m.path.endswith("/"))


def replace_text(path: str, text: str, encoding: str = "utf-8") -> None:
    """Write `path` so that a reader sees the old content or the new one, never a part: a local
    file is written beside it and renamed over it; a Cloud Storage object appears whole on upload."""
    path = str(path)
    if is_remote(path):
        write_text(path, text, encoding)
        return
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    temp = os.path.join(parent, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(temp, "w", encoding=encoding) as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)
