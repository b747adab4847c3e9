"""The one filesystem layer: paths that may be local or on a bucket (`gs://...`).

Buckets go through Apache Beam's public `FileSystems` API (the google-cloud-storage client, which
honours `STORAGE_EMULATOR_HOST`, the tests' emulator; TensorFlow's `gs://` does not); local
reads, writes and listings use the standard library. Stages ask this module (`walk`, `find`,
`glob_after`, `split`, `is_dir`, `absolute`, `make_writable_dir`, `remove_tree`, ...) rather than
branching on `is_remote` themselves.

Files that TensorFlow itself must read or write (a model dir's checkpoints and config.yaml, the
records tf.data reads, a .tflite) go through `odpipe.storage.tfio`, TensorFlow's own filesystem:
the only place in odpipe that calls `tf.io.gfile`.

`walk` is the one folder walker (annotations, predict's inputs, copies): an unreadable folder is
an error naming it, never skipped; each real folder is walked once, however many symbolic links
lead to it (a loop adds nothing), real paths before linked ones. Everywhere, a path that exists
is a path, never a pattern.
"""

from __future__ import annotations

import errno
import glob as _glob
import os
import posixpath
import shutil
from typing import IO

# Apache Beam (buckets) is imported inside the functions that reach a bucket: about a second of
# start-up that local paths never need.

GLOB_CHARS = frozenset("*?[")


def is_remote(path: str) -> bool:
    """True for URIs such as `gs://bucket/key`."""
    return "://" in str(path)


def has_glob(path: str) -> bool:
    """True when `path` holds a glob character (`*`, `?`, `[`)."""
    return bool(GLOB_CHARS & set(str(path)))


def join(base: str, *parts: str) -> str:
    base = str(base)
    if is_remote(base):
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def absolute(path: str) -> str:
    """A local path made absolute; a bucket URI as is."""
    path = str(path)
    return path if is_remote(path) else os.path.abspath(path)


def split(path: str) -> tuple[str, str]:
    """(parent folder, last name) of a local path or a `gs://` URI ("." for a bare local name)."""
    path = str(path)
    parent, base = posixpath.split(path) if is_remote(path) else os.path.split(path)
    return parent or ".", base


def basename(path: str) -> str:
    return split(str(path).rstrip("/" if is_remote(path) else os.sep))[1]


def _fs():
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def _not_found(err: Exception) -> bool:
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
        if _not_found(err):
            raise FileNotFoundError(errno.ENOENT, "not found", path) from err
        raise


def _blocking_file(path: str) -> str | None:
    """The existing non-folder that stands where a folder of `path`'s parents should be."""
    current = os.path.abspath(path)
    while not os.path.lexists(current) and os.path.dirname(current) != current:
        current = os.path.dirname(current)
    return None if os.path.isdir(current) else current


def makedirs(path: str) -> None:
    """Create a local folder and its parents (buckets have no folders). A file standing where a
    folder should be is `NotADirectoryError` naming that file (not `os.makedirs`' "File exists")."""
    path = str(path)
    if is_remote(path):
        return
    try:
        os.makedirs(path, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        blocking = _blocking_file(path) or path
        raise NotADirectoryError(errno.ENOTDIR, "a file stands where a folder is needed", blocking) from err


def make_writable_dir(path: str) -> None:
    """`makedirs`, then prove a file can be created there (a probe, removed), so an unwritable
    folder fails at once, before a long stage runs, as the OSError naming it. Buckets: no check."""
    path = str(path)
    makedirs(path)
    if is_remote(path):
        return
    probe = os.path.join(path, f".odpipe-write-test-{os.getpid()}")
    try:
        with open(probe, "wb"):
            pass
    except OSError as err:
        raise type(err)(err.errno, err.strerror, path) from err
    os.remove(probe)


def open_write(path: str) -> IO[bytes]:
    """A binary file object for writing; local parent folders are created."""
    path = str(path)
    if not is_remote(path):
        makedirs(os.path.dirname(os.path.abspath(path)))
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
    """True for an existing file or folder (locally) or object (on a bucket); taken literally."""
    path = str(path)
    if not is_remote(path):
        return os.path.exists(path)
    return _fs().exists(path)


def is_file(path: str) -> bool:
    path = str(path)
    return exists(path) if is_remote(path) else os.path.isfile(path)


def is_dir(path: str) -> bool:
    """A local folder, or a bucket prefix with at least one object under it."""
    path = str(path)
    if not is_remote(path):
        return os.path.isdir(path)
    return bool(glob_after(path.rstrip("/") + "/", "**", limit=1))


def size(path: str) -> int:
    """Size in bytes of a file or object; FileNotFoundError when there is none."""
    path = str(path)
    if not is_remote(path):
        return os.path.getsize(path)
    found = _fs().match([path])[0].metadata_list
    if not found:
        raise FileNotFoundError(errno.ENOENT, "not found", path)
    return found[0].size_in_bytes


def glob(pattern: str) -> list[str]:
    """Sorted files matching a glob pattern (local or `gs://`; `**` crosses folders)."""
    pattern = str(pattern)
    if not is_remote(pattern):
        return sorted(_glob.glob(pattern, recursive=True))
    result = _fs().match([pattern])[0]
    return sorted(m.path for m in result.metadata_list)


def escape_glob(path: str) -> str:
    """`path` as a glob pattern that matches only itself (`[`, `*`, `?` bracketed, as glob.escape;
    Beam's patterns read `[[]` the same way)."""
    return "".join(f"[{c}]" if c in GLOB_CHARS else c for c in str(path))


def glob_after(prefix: str, tail: str, limit: int | None = None) -> list[str]:
    """Sorted paths made of `prefix` taken literally, then text matching the glob `tail`, e.g.
    `glob_after("out[v2]/train", "-*.tfrecord")` (at most `limit`)."""
    pattern = escape_glob(prefix) + str(tail)
    if not is_remote(prefix):
        return sorted(_glob.glob(pattern, recursive=True))[:limit]
    return sorted(m.path for m in _fs().match([pattern], limits=[limit])[0].metadata_list)


def list_files(folder: str) -> list[str]:
    """Relative paths (with `/`) of every file under `folder`, recursively, sorted ([] when none)."""
    return walk(folder).files


def copy_tree(source: str, destination: str, files: list[str] | None = None) -> int:
    """Copy the files under `source` (`files`, relative paths; default all) to the same relative
    paths under `destination`, streaming (local or `gs://` on either side); returns the count."""
    source = str(source).rstrip("/") if is_remote(source) else str(source)
    files = list_files(source) if files is None else files
    for rel in files:
        with open_read(join(source, *rel.split("/"))) as src, open_write(join(destination, *rel.split("/"))) as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
    return len(files)


def remove_tree(folder: str) -> None:
    """Delete a folder and everything under it (local: best effort), or every object under
    `folder/` (bucket); a missing folder is no error."""
    folder = str(folder)
    if is_remote(folder):
        delete(glob_after(folder.rstrip("/") + "/", "**"))
        return
    shutil.rmtree(folder, ignore_errors=True)


def delete(paths: list[str]) -> None:
    """Delete files (local folders: recursively), each path taken literally, never as a pattern
    (Beam's `FileSystems.delete` globs a bucket path: deleting `out[v2]/a` would delete `outv/a`)."""
    remote = [str(p) for p in paths if is_remote(p)]
    for path in (str(p) for p in paths if not is_remote(p)):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    if remote:
        from apache_beam.io.gcp.gcsio import GcsIO

        failed = [(path, err) for path, err in GcsIO().delete_batch(remote) if err is not None and not _not_found(err)]
        if failed:
            path, err = failed[0]
            raise OSError(errno.EIO, f"cannot delete ({type(err).__name__}: {err})", path)


def rename(sources: list[str], destinations: list[str]) -> None:
    """Move files (local: os.rename, without Beam; gs://: copy then delete)."""
    pairs = list(zip(map(str, sources), map(str, destinations)))
    for source, destination in pairs:
        if not is_remote(source) and not is_remote(destination):
            os.rename(source, destination)
    remote = [(s, d) for s, d in pairs if is_remote(s) or is_remote(d)]
    if remote:
        _fs().rename([s for s, _ in remote], [d for _, d in remote])


def stat_files(folder: str) -> list[tuple[str, int, float]]:
    """(relative path with `/`, size in bytes, modification time) of every file under `folder`,
    recursively (the one walker's rules), sorted — from the listing alone: no file is opened, so it
    is cheap on 100k-object buckets; on gs:// the time is the object's last update."""
    root = str(folder).rstrip("/")
    if not is_remote(root):
        found = []
        for rel in walk(root).files:
            st = os.stat(os.path.join(root, *rel.split("/")))
            found.append((rel, st.st_size, st.st_mtime))
        return found
    result = _fs().match([escape_glob(root) + "/**"])[0]
    return sorted((m.path[len(root) + 1 :], m.size_in_bytes, float(m.last_updated_in_seconds or 0.0))
                  for m in result.metadata_list if not m.path.endswith("/"))


def replace_text(path: str, text: str, encoding: str = "utf-8") -> None:
    """Write `path` so that a reader sees the old content or the new one, never a part: a local
    file is written beside it (`.NAME.PID.tmp`) and renamed over it; a Cloud Storage object appears
    whole on upload. The temporary files of writers killed before their rename are removed
    (`remove_stale_temps`); a failed write removes its own."""
    path = str(path)
    if is_remote(path):
        write_text(path, text, encoding)
        return
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    remove_stale_temps(parent, os.path.basename(path))
    temp = os.path.join(parent, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(temp, "w", encoding=encoding) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def list_prefix(prefix: str) -> list[str]:
    """Sorted paths that start with `prefix` literally (no glob character interpreted): local
    entries (files and folders) of its parent folder; on a bucket, every object under it."""
    prefix = str(prefix)
    if is_remote(prefix):
        return glob_after(prefix, "**")
    parent, base = os.path.split(prefix)
    try:
        names = os.listdir(parent or ".")
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(os.path.join(parent, n) for n in names if n.startswith(base))


def replace(source: str, destination: str) -> None:
    """Move one file over another: atomic locally (os.replace); on a bucket a copy then a delete
    (the destination object appears whole or not at all)."""
    if is_remote(source) or is_remote(destination):
        rename([source], [destination])
    else:
        os.replace(source, destination)


# The one folder walker lives beside this module (odpipe/storage/walker.py); it is part of this API.
# Exclusive create, listings with checksums, stale temporary files: odpipe/storage/objects.py.
from odpipe.storage.objects import create_exclusive, remove_stale_temps, stat_checksums  # noqa: E402, F401
from odpipe.storage.walker import Walk, filter_listing, find, walk  # noqa: E402, F401
