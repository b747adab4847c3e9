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
    """Delete files (a local folder with everything under it); local paths without Beam."""
    paths = [str(p) for p in paths]
    local = [p for p in paths if not is_remote(p)]
    for path in local:
        if os.path.isdir(path) and not os.path.islink(path):
            import shutil

            shutil.rmtree(path)
        else:
            os.remove(path)
    remote = [p for p in paths if is_remote(p)]
    if remote:
        _fs().delete(remote)


def rename(sources: list[str], destinations: list[str]) -> None:
    """Move files (local: os.rename, without Beam; gs://: copy then delete)."""
    pairs = list(zip(map(str, sources), map(str, destinations)))
    for source, destination in pairs:
        if not is_remote(source) and not is_remote(destination):
            os.rename(source, destination)
    remote = [(s, d) for s, d in pairs if is_remote(s) or is_remote(d)]
    if remote:
        _fs().rename([s for s, _ in remote], [d for _, d in remote])



# -- literal paths, prefixes and atomic replacement (the records stage's output) ----------------


def split(path: str) -> tuple[str, str]:
    """(parent folder, last name) of a local path or a `gs://` URI ("." for a bare local name)."""
    path = str(path)
    parent, base = posixpath.split(path) if is_remote(path) else os.path.split(path)
    return parent or ".", base


def escape_glob(path: str) -> str:
    """`path` as a glob pattern that matches only itself (`[`, `*`, `?` bracketed, as glob.escape)."""
    return "".join(f"[{c}]" if c in "[*?" else c for c in str(path))


def resolve(pattern: str) -> list[str]:
    """The files a user's pattern names: a path that exists is that path, never a pattern (a file
    may be called `photo[1].jpg`); otherwise the sorted glob matches."""
    pattern = str(pattern)
    if exists(pattern) and not is_dir(pattern):
        return [pattern]
    return glob(pattern)


def is_dir(path: str) -> bool:
    """A local folder (a bucket has none: False)."""
    return not is_remote(path) and os.path.isdir(str(path))


def list_prefix(prefix: str) -> list[str]:
    """Sorted paths that start with `prefix` literally (no glob characters interpreted): local
    entries (files and folders) of its parent folder; on a bucket, every object under it."""
    prefix = str(prefix)
    if is_remote(prefix):
        return glob(escape_glob(prefix) + "**")
    parent, base = os.path.split(prefix)
    try:
        names = os.listdir(parent or ".")
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(os.path.join(parent, n) for n in names if n.startswith(base))


def remove_tree(folder: str) -> None:
    """Delete a folder and everything under it (local), or every object under `folder/` (bucket)."""
    folder = str(folder)
    if is_remote(folder):
        delete(glob(escape_glob(folder.rstrip("/")) + "/**"))
    else:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def replace(source: str, destination: str) -> None:
    """Move one file over another: atomic locally (os.replace); on a bucket a copy then a delete
    (the destination object appears whole or not at all)."""
    if is_remote(source):
        rename([source], [destination])
    else:
        os.replace(source, destination)


use_emulator_anonymously()
