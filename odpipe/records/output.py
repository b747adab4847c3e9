"""Atomic record output: a reader sees a complete shard set or none, never a mix.

Writing (`Staging`): every file of a run is written under a hidden temporary folder beside the
output, `.BASE.tmp-HOST-PID-XXXXXXXX/`, then committed in this order, one file operation at a time:
  1. delete the old `PREFIX.summary.json` (the manifest): the old set stops being listed;
  2. delete the old shards of the prefix (found by listing the literal prefix, never by a glob);
  3. move the new shards into place;
  4. write the new summary (a temporary file moved over it), last.
A run that dies anywhere leaves either the old set (with or without its manifest), or a set that
`shard_files` recognises as incomplete (some of its N shards, no manifest), or the new set. A
rerun deletes its own stale temporary folders: those of the same prefix made on this host by a
process that is no longer running (a bucket's folder made elsewhere is left alone: its owner may
still be running).

Reading (`shard_files`): a pattern's prefix with a summary resolves to the summary's shard list
(each must exist); without one, shards named PREFIX-SSSSS-of-NNNNN must form a complete set.
Readers (inspect, evaluate, train) call it instead of globbing.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import uuid

from odpipe import schema, storage
from odpipe.errors import UserError, first_line

_TMP = ".tmp-"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_temp_folders(prefix: str) -> list[str]:
    """Temporary folders of `prefix` left by dead runs on this host."""
    parent, base = storage.split(prefix)
    start = storage.join(parent, f".{base}{_TMP}")
    folders = set()
    for path in storage.list_prefix(start):
        name = path[len(parent) + 1:].split("/")[0]  # a local entry, or the first name under a bucket prefix
        folders.add(name)
    stale = []
    for name in sorted(folders):
        try:
            host, pid, tag = name[len(base) + 1 + len(_TMP):].rsplit("-", 2)
        except ValueError:
            continue
        if host == _host() and pid.isdigit() and re.fullmatch(r"[0-9a-f]{8}", tag) and not _alive(int(pid)):
            stale.append(storage.join(parent, name))
    return stale


def existing_shards(prefix: str) -> list[str]:
    """Every PREFIX-SSSSS-of-NNNNN.tfrecord file, found by a literal listing (glob characters in the
    prefix are plain characters; another prefix's shards never match)."""
    found = []
    for path in storage.list_prefix(prefix + "-"):
        match = schema.SHARD_NAME.search(path)
        if match and match.start() == len(prefix):
            found.append(path)
    return found


def write_error(path: str, err: OSError) -> UserError:
    reason = err.strerror or first_line(err)
    if err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        fix = "free space (or a larger file size limit) or write elsewhere with -o"
    elif err.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = "a file is in the way where a folder is expected: remove it or choose another -o"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "choose a writable -o folder or fix its permissions"
    else:
        fix = "check the -o path"
    return UserError(f"{err.filename or path}: cannot write the records ({reason}); {fix}")


class Staging:
    """The temporary folder of one run and the commit of its files into place."""

    def __init__(self, prefix: str):
        self.prefix = str(prefix)
        self.parent, self.base = storage.split(self.prefix)
        if not self.base or self.base in (".", ".."):
            raise UserError(f"-o {prefix}: give a file prefix such as records/train, not a folder")
        self.dir = storage.join(self.parent, f".{self.base}{_TMP}{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self.cleaned: list[str] = []

    def open(self) -> Staging:
        """Delete this prefix's stale temporary folders, create this run's; OS errors are UserErrors."""
        if storage.is_dir(self.prefix):
            raise UserError(f"-o {self.prefix}: is a folder; give a file prefix inside it, e.g. {self.prefix}/train")
        try:
            for folder in stale_temp_folders(self.prefix):
                storage.remove_tree(folder)
                self.cleaned.append(folder)
            storage.makedirs(self.dir)
            probe = storage.join(self.dir, "probe")
            storage.write_bytes(probe, b"")
            storage.delete([probe])
        except OSError as err:
            raise write_error(self.dir, err) from None
        return self

    def path(self, name: str) -> str:
        return storage.join(self.dir, name)

    def shard(self, shard: int, num_shards: int) -> str:
        return schema.shard_path(self.path("part"), shard, num_shards)

    def commit(self, num_shards: int, summary: dict) -> list[str]:
        """Move the shards into place and write the summary last (see the module docstring);
        `summary["shards"]` is set to the final paths. Returns them."""
        finals = [schema.shard_path(self.prefix, i, num_shards) for i in range(num_shards)]
        summary["shards"] = finals
        summary_file = schema.summary_path(self.prefix)
        staged_summary = self.path("summary.json")
        try:
            storage.write_text(staged_summary, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
            if storage.exists(summary_file):
                storage.delete([summary_file])
            for old in existing_shards(self.prefix):
                storage.delete([old])
            for i, final in enumerate(finals):
                storage.rename([self.shard(i, num_shards)], [final])
            storage.replace(staged_summary, summary_file)
        except OSError as err:
            raise write_error(self.prefix, err) from None
        return finals

    def discard(self) -> None:
        """Delete the temporary folder (best effort: a failure here must not hide the real error)."""
        try:
            storage.remove_tree(self.dir)
        except Exception:  # noqa: BLE001
            pass


def shard_files(pattern: str) -> list[str]:
    """The record files a pattern names, honouring the summary as the manifest of the set.

    A path that exists is that file. `PREFIX-*.tfrecord` with `PREFIX.summary.json`: the summary's
    shards (UserError when one is missing). Otherwise the glob's files (glob characters in PREFIX
    are also tried literally), where odpipe-named shards must form a complete set of N. UserError
    when nothing matches or the set is incomplete.
    """
    pattern = str(pattern)
    if storage.is_dir(pattern):
        raise UserError(f"{pattern}: is a folder; give the records' pattern, e.g. '{pattern.rstrip('/')}/train-*.tfrecord'")
    if storage.exists(pattern):
        return [pattern]
    prefix = schema.prefix_of(pattern)
    if prefix is not None and storage.exists(schema.summary_path(prefix)):
        summary_file = schema.summary_path(prefix)
        try:
            listed = json.loads(storage.read_text(summary_file))["shards"]
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(f"{summary_file}: not a records summary ({first_line(err)}); rerun `odpipe tfrecord`") from None
        parent = storage.split(prefix)[0]
        files = [storage.join(parent, storage.split(p)[1]) for p in listed]
        missing = [p for p in files if not storage.exists(p)]
        if missing:
            raise UserError(f"{missing[0]}: listed in {summary_file} but missing ({len(missing)} of {len(files)} shards); "
                            "rerun `odpipe tfrecord`")
        return files
    files = storage.glob(pattern)
    if not files and prefix is not None and storage.escape_glob(prefix) != prefix:
        files = storage.glob(storage.escape_glob(prefix) + pattern[len(prefix):])
    if not files:
        raise UserError(f"{pattern}: no TFRecord file matches; check the pattern (e.g. 'records/train-*.tfrecord')")
    sets: dict[str, set] = {}
    for path in files:
        match = schema.SHARD_NAME.search(path)
        if match:
            sets.setdefault(path[: match.start()], set()).add((int(match.group(1)), int(match.group(2))))
    for shard_prefix, members in sorted(sets.items()):
        totals = {n for _, n in members}
        if len(totals) > 1 or len(members) != next(iter(totals)):
            raise UserError(
                f"{pattern}: incomplete shard set ({len(members)} shard(s) of {'/'.join(map(str, sorted(totals)))}, "
                f"no {schema.summary_path(shard_prefix)}): an `odpipe tfrecord` run was interrupted; rerun it"
            )
    return files
