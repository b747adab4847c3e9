"""The one folder walker of odpipe.storage (`walk`, `find`), used by every stage that lists a
folder: annotations, predict's inputs, copies, the data fingerprint.

An unreadable folder is an error naming it, never skipped; each real folder is walked once,
however many symbolic links lead to it (a loop adds nothing), real paths before linked ones; a
path that exists is a path, never a pattern.
"""

from __future__ import annotations

import dataclasses
import os

from odpipe.storage import basename, glob, glob_after, has_glob, is_dir, is_file, is_remote, join


@dataclasses.dataclass
class Walk:
    """What `walk` found under `root`. Sorted relative paths (with `/`): `files` kept, `repeated`
    folders not walked again (reached again through a link, e.g. a loop), `broken` links leading
    nowhere; `hidden`: how many hidden entries were skipped (a hidden folder counts once)."""

    root: str
    files: list[str]
    hidden: int = 0
    repeated: list[str] = dataclasses.field(default_factory=list)
    broken: list[str] = dataclasses.field(default_factory=list)


def _keep(name: str, suffixes: tuple[str, ...] | None) -> bool:
    return suffixes is None or name.lower().endswith(suffixes)


def _walk_local(root: str, recursive: bool, skip_hidden: bool, suffixes) -> Walk:
    found = Walk(root, [])
    if not os.path.isdir(root):
        return found
    seen: set[tuple[int, int]] = set()

    def first_visit(path: str, rel: str) -> bool:  # False for a folder already walked (link loop, bind mount)
        try:
            info = os.stat(path)
        except OSError:
            found.broken.append(rel)
            return False
        key = (info.st_dev, info.st_ino)
        if key in seen:
            found.repeated.append(rel)
            return False
        seen.add(key)
        return True

    real = [(root, "")] if first_visit(root, "") else []  # folders to list: (path, relative path)
    linked: list[tuple[str, str]] = []  # folders reached through a link: walked after the real ones
    while real or linked:
        if real:
            path, rel = real.pop()
        else:
            path, rel = linked.pop(0)
            if not first_visit(path, rel):
                continue
        with os.scandir(path) as listing:  # an unreadable folder raises here, naming it
            entries = sorted(listing, key=lambda e: e.name)
        subfolders = []
        for entry in entries:
            child = f"{rel}/{entry.name}" if rel else entry.name
            hidden = skip_hidden and entry.name.startswith(".")
            try:
                is_folder = entry.is_dir()
            except OSError:
                is_folder = False
            if hidden and (is_folder or _keep(entry.name, suffixes)):
                found.hidden += 1
            elif is_folder and recursive and entry.is_symlink():
                linked.append((entry.path, child))
            elif is_folder and recursive and first_visit(entry.path, child):
                subfolders.append((entry.path, child))
            elif not is_folder and _keep(entry.name, suffixes):
                if entry.is_file():
                    found.files.append(child)
                elif entry.is_symlink() and not os.path.exists(entry.path):
                    found.broken.append(child)
        real.extend(reversed(subfolders))
    for names in (found.files, found.repeated, found.broken):
        names.sort()
    return found


def _walk_remote(root: str, recursive: bool, skip_hidden: bool, suffixes) -> Walk:
    prefix = root.rstrip("/") + "/"
    return filter_listing(root, [path[len(prefix) :] for path in glob_after(prefix, "**")], recursive, skip_hidden,
                          suffixes)


def filter_listing(root: str, names: list[str], recursive: bool = True, skip_hidden: bool = False,
                   suffixes=None) -> Walk:
    """The walker's rules applied to a bucket listing (`names`: object names relative to `root`),
    for callers that list objects themselves (e.g. with their checksums)."""
    suffixes = tuple(s.lower() for s in suffixes) if suffixes else None
    found = Walk(root, [])
    hidden_folders: set[str] = set()
    for rel in names:
        if not rel or rel.endswith("/"):  # the "folder" placeholder objects some tools write
            continue
        parts = rel.split("/")
        if not recursive and len(parts) > 1:
            continue
        if skip_hidden:
            first = next((i for i, part in enumerate(parts) if part.startswith(".")), None)
            if first is not None and first < len(parts) - 1:
                hidden_folders.add("/".join(parts[: first + 1]))
                continue
            if first is not None:
                found.hidden += _keep(parts[-1], suffixes)
                continue
        if _keep(parts[-1], suffixes):
            found.files.append(rel)
    found.hidden += len(hidden_folders)
    found.files.sort()
    return found


def walk(folder: str, recursive: bool = True, skip_hidden: bool = False, suffixes=None) -> Walk:
    """The files under `folder` (local or `gs://`, taken literally), the one walker every stage uses.

    Args:
        recursive: Also walk sub-folders, and folders that links lead to, each real folder once.
        skip_hidden: Skip files and folders whose name starts with "." (counted in `hidden`).
        suffixes: Keep only files whose name ends with one of these (any case), e.g. (".xml",).

    A missing folder (a prefix with no object) gives no files; a local folder that cannot be
    listed raises the OSError naming it: nothing is skipped silently.
    """
    folder = str(folder)
    suffixes = tuple(s.lower() for s in suffixes) if suffixes else None
    if is_remote(folder):
        return _walk_remote(folder, recursive, skip_hidden, suffixes)
    return _walk_local(folder, recursive, skip_hidden, suffixes)


def find(item: str, suffixes=None) -> tuple[str, list[tuple[str, str]]]:
    """What a command-line input names, as (kind, [(path, name)]): "file" for an existing file,
    whatever characters its name holds; "folder" for an existing folder or prefix (its files, by
    `suffixes`, named relative to it); "pattern" for a glob that matched (by `suffixes`, base
    names); "missing" otherwise. A path that exists is a path, never a pattern."""
    item = str(item)
    suffixes = tuple(s.lower() for s in suffixes) if suffixes else None
    if not item.endswith("/") and is_file(item):
        return "file", [(item, basename(item))]
    if is_dir(item):
        root = item.rstrip("/") if is_remote(item) else item
        listing = walk(root, suffixes=suffixes)
        return "folder", [(join(root, *rel.split("/")), rel) for rel in listing.files]
    if has_glob(item):
        matches = [p for p in glob(item) if _keep(basename(p), suffixes) and (is_remote(p) or os.path.isfile(p))]
        if matches:
            return "pattern", [(p, basename(p)) for p in matches]
    return "missing", []
