"""The model home: every published model, versioned, and a pointer to the one in service.

    HOME/                      (a local folder or gs://BUCKET/PATH)
      current.json             {"version": "0002", "mAP": ..., ...}: the model in service
      versions/0001/
        claim.json             first file: which publish owns this number (created only if absent)
        export/                the evaluated export (saved_model/, label_map.pbtxt, export.json, ...)
        checkpoint/            the checkpoint it was exported from, with its config.yaml (warm starts)
        label_map.pbtxt        its label map (the next run extends it, so class ids never move)
        metrics.json           its evaluation, champion figures included
        version.json           where it came from: fingerprint, run, parameters, date, blessed
      attempts/FINGERPRINT.json  challengers that were not blessed (an unchanged rerun is skipped)

The rules that make a killed run, or two runs at once, harmless (the way TFX's Pusher and the
Model Registry work):
- a version number is claimed exclusively (`claim.json` created only if it does not exist:
  O_EXCL locally, `if_generation_match=0` on gs://); the loser takes the next number, so no run
  ever writes into another run's version;
- history is append-only: a version number is never reused, a version folder never rewritten;
- `version.json` is the last file of a version, so a folder without it is an incomplete
  publish, listed as such and never made current; a damaged one (empty, truncated, not an
  object) is listed as damaged and skipped: it blocks no listing and no later publish;
- only a complete version (valid version.json, export with its export.json, not "blessed: false")
  may be published, promoted or served;
- `current.json` is written last of all, in one piece (`storage.replace_text`): it is the commit
  point, and it always names a complete version. Rollback and roll-forward rewrite only it. Only a
  missing current.json means "no model yet"; a damaged one, or one naming a version this home
  cannot serve, is an error naming it, and `promote` is the way out.

    odpipe models list HOME
    odpipe models promote HOME VERSION
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import socket
import uuid
from typing import Any

from odpipe import registry, storage
from odpipe.errors import UserError, first_line
from odpipe.schema import EXPORT_COMPLETION

# Imported inside functions: odpipe.label_map and odpipe.registry (google-cloud-aiplatform: seconds), only where
# a warm start or a registry alias needs them.

CURRENT = "current.json"
VERSIONS = "versions"
ATTEMPTS = "attempts"
VERSION_FILE = "version.json"
CLAIM = "claim.json"
EXPORT_DONE = EXPORT_COMPLETION  # the export's completion file (written last by `odpipe export`)
HEADLINE = ("mAP", "mAP@0.5", "mAP@0.75", "recall")
VERSION_NAME = re.compile(r"[0-9]{4,}")
CLAIM_TRIES = 50
_MISSING = object()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _root(home: str) -> str:
    return str(home).rstrip("/")


def _fix(home: str) -> str:
    return f"promote a complete version with `odpipe models promote {home} VERSION` (see `odpipe models list {home}`)"


def _load(path: str) -> tuple[Any, str | None]:
    """(the parsed JSON, None); (_MISSING, None) when there is no such file; (None, problem)."""
    try:
        text = storage.read_text(path)
    except FileNotFoundError:
        return _MISSING, None
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    try:
        return json.loads(text), None
    except ValueError as err:
        return None, f"not valid JSON ({err})"


def version_dir(home: str, version: str) -> str:
    return storage.join(_root(home), VERSIONS, version)


def _pointer(home: str) -> tuple[dict | None, str | None]:
    """current.json as (content, None); (None, None) when there is none (a new home); (None, the
    problem) when it is damaged. Only a missing file means "no model yet"."""
    path = storage.join(home, CURRENT)
    doc, problem = _load(path)
    if doc is _MISSING:
        return None, None
    if problem is None and not isinstance(doc, dict):
        problem = f"holds JSON {json.dumps(doc)[:30]}, not an object naming a version"
    elif problem is None and not isinstance(doc.get("version"), str):
        value = doc.get("version")
        problem = ('has no "version"' if value is None
                   else f'"version" is {json.dumps(value)[:30]}, not a version name such as "0002"')
    return (None, f"{path}: {problem}") if problem else (doc, None)


def read_current(home: str) -> dict | None:
    """current.json of the home: None only when there is none (a new home); a damaged one
    (not JSON, not an object, no "version" string) is a UserError, never "no model yet"."""
    if not home:
        return None
    home = _root(home)
    doc, problem = _pointer(home)
    if problem:
        raise UserError(f"{problem}; {_fix(home)}")
    return doc


def _scan(home: str) -> dict[str, set[str]]:
    """{version folder name: relative paths of its files} (one listing of versions/)."""
    folders: dict[str, set[str]] = {}
    for rel in storage.list_files(storage.join(home, VERSIONS)):
        name, _, rest = rel.partition("/")
        folders.setdefault(name, set()).add(rest)
    return folders


def _blessed(home: str, name: str, doc: dict) -> bool | None:
    if "blessed" in doc:
        return doc["blessed"]
    metrics, _ = _load(storage.join(version_dir(home, name), "metrics.json"))  # versions from before it was recorded
    return metrics.get("blessed") if isinstance(metrics, dict) else None


def _check_version(home: str, name: str, files: set[str]) -> tuple[dict | None, str | None]:
    """(version.json, None) for a complete version that may serve; else (what was readable, why not)."""
    if not VERSION_NAME.fullmatch(name):
        return None, "not a version folder (versions are numbered: 0001, 0002, ...)"
    if VERSION_FILE not in files:
        return None, "incomplete publish (no version.json)"
    doc, problem = _load(storage.join(version_dir(home, name), VERSION_FILE))
    if problem or doc is _MISSING:
        return None, f"damaged version.json ({problem or 'gone'})"
    if not isinstance(doc, dict):
        return None, f"damaged version.json (a JSON {type(doc).__name__}, not an object)"
    if doc.get("version") != name:
        return None, f"damaged version.json (it names version {json.dumps(doc.get('version'))[:30]})"
    doc = {**doc, "blessed": _blessed(home, name, doc)}
    if f"export/{EXPORT_DONE}" not in files:
        return doc, f"no complete export (export/{EXPORT_DONE} missing)"
    if doc["blessed"] is False:
        return doc, "not blessed (its metrics say blessed: false)"
    return doc, None


def _pointer_problem(home: str, pointer: dict, folders: dict[str, set[str]]) -> str | None:
    """Why the version current.json names cannot serve (None when it can)."""
    name, path = pointer["version"], storage.join(home, CURRENT)
    if not VERSION_NAME.fullmatch(name) or name not in folders:
        return f"{path}: names version {json.dumps(name)[:30]}, which this home does not have"
    problem = _check_version(home, name, folders[name])[1]
    return f"{path}: names version {name}, which cannot serve: {problem}" if problem else None


def inspect_home(home: str) -> tuple[list[dict], str | None]:
    """(every version folder, in number order: {"version", "complete", "problem", "blessed",
    "current", ...version.json}, the problem of current.json or None). A damaged version is listed
    with its problem, never an error: it blocks nothing."""
    home = _root(home)
    folders = _scan(home)
    pointer, problem = _pointer(home)
    out = []
    for name in sorted(folders, key=lambda n: (len(n), n)):
        doc, why = _check_version(home, name, folders[name])
        out.append({**(doc or {}), "version": name, "complete": why is None, "problem": why,
                    "blessed": (doc or {}).get("blessed"), "current": bool(pointer) and pointer["version"] == name})
    if pointer:
        problem = _pointer_problem(home, pointer, folders)
    return out, problem


def list_versions(home: str) -> list[dict]:
    """Every version folder, oldest first (see `inspect_home`)."""
    return inspect_home(home)[0]


def next_version(home: str) -> str:
    """The next number: one past every folder ever started (claimed, complete or not), so none is reused."""
    numbers = [int(name) for name in _scan(_root(home)) if VERSION_NAME.fullmatch(name)]
    return f"{max(numbers, default=0) + 1:04d}"


def champion(home: str) -> dict | None:
    """The model in service with the paths a run needs (export, label map, checkpoint); None only
    for a home without current.json. A damaged pointer, or one naming a version that is missing,
    incomplete, without export or not blessed, is a UserError (never "no model yet")."""
    home = _root(home)
    current = read_current(home)
    if current is None:
        return None
    name = current["version"]
    folders = {name: set(storage.list_files(version_dir(home, name)))} if VERSION_NAME.fullmatch(name) else {}
    problem = _pointer_problem(home, current, {k: v for k, v in folders.items() if v})
    if problem:
        raise UserError(f"{problem}; {_fix(home)}")
    folder = version_dir(home, name)
    doc = _check_version(home, name, folders[name])[0]
    return {**doc, **current, "dir": folder, "export": storage.join(folder, "export"),
            "label_map": storage.join(folder, "label_map.pbtxt"),
            "checkpoint": storage.join(folder, doc["checkpoint"]) if doc.get("checkpoint") else ""}


def check_writable(home: str) -> None:
    """Proves a file can be created in the model home (a probe, removed at once), so a run whose
    home cannot be written fails in its first task, not after training: UserError otherwise."""
    home = _root(home)
    probe = storage.join(home, f".odpipe-write-probe-{uuid.uuid4().hex[:12]}")
    try:
        storage.write_text(probe, "probe\n")
        storage.delete([probe])
    except Exception as err:  # OSError locally; the storage client's own errors on a bucket
        reason = (err.strerror if isinstance(err, OSError) else None) or first_line(err, 160)
        raise UserError(f"{home}: cannot write to the model home ({reason}); check the path and its permissions, "
                        "or pass another --model-home") from None


def warm_start_modules(checkpoint: str, label_map_path: str) -> str:
    """What a warm start from a version's checkpoint restores: everything when the classes are
    the same, else the backbone and decoder (the class head is re-initialised for the new classes).
    (The trainer rebuilds the version's architecture from the config.yaml beside the checkpoint.)"""
    from odpipe.label_map import read_label_map

    folder = str(checkpoint).rsplit("/", 2)[0]  # HOME/versions/NNNN/checkpoint/ckpt-N
    old = read_label_map(storage.join(folder, "label_map.pbtxt"))
    return "all" if old == read_label_map(label_map_path) else "backbone,decoder"


def _export_files(export_dir: str) -> list[str]:
    """The files of a finished export (refused: empty, no label map, no completion file)."""
    files = storage.list_files(export_dir)
    if not files:
        raise UserError(f"{export_dir}: export folder is empty or missing; run `odpipe export` first")
    if "label_map.pbtxt" not in files:
        raise UserError(f"{export_dir}: export has no label_map.pbtxt; export it again with `odpipe export`")
    if EXPORT_DONE not in files:
        raise UserError(f"{export_dir}: export has no {EXPORT_DONE} (written last), so it did not finish; "
                        "export it again with `odpipe export`")
    return files


def _checkpoint_files(checkpoint: str | None) -> tuple[str, str, list[str]]:
    """(folder, stem, files) of a checkpoint prefix such as model/best/ckpt-100 (("", "", []) for none)."""
    if not checkpoint:
        return "", "", []
    parent, _, stem = str(checkpoint).rpartition("/")
    files = [p for p in storage.list_files(parent) if "/" not in p and p.startswith(stem + ".")] if parent else []
    if not files:
        raise UserError(f"{checkpoint}: no checkpoint files; pass the prefix of a saved checkpoint (e.g. model/best/ckpt-100)")
    return parent, stem, files


def _claim(home: str, token: str, run: str) -> str:
    """Takes the next version number for this publish alone: claim.json is created only if it does
    not exist (O_EXCL locally, if_generation_match=0 on gs://). A run that loses the race takes the
    next number; no two runs ever write into one version."""
    floor = 0
    for _ in range(CLAIM_TRIES):
        number = max(int(next_version(home)), floor)
        version = f"{number:04d}"
        claim = {"claim": token, "run": run, "host": socket.gethostname(), "pid": os.getpid(), "created": _now()}
        try:
            storage.create_exclusive(storage.join(version_dir(home, version), CLAIM), json.dumps(claim, indent=1) + "\n")
            return version
        except FileExistsError:  # another run took it between our listing and our claim
            floor = number + 1
    raise UserError(f"{home}: no free version number after {CLAIM_TRIES} tries (other runs are publishing); run it again")


def publish(home: str, export_dir: str, metrics: dict, provenance: dict | None = None,
            checkpoint: str | None = None, extra: dict[str, str] | None = None) -> dict:
    """Adds a new version (claim first, then export, label map, checkpoint files, metrics,
    version.json last) and then makes it current (current.json last of all). Refused: an
    unfinished export, a model whose metrics say it is not blessed, a home whose current.json is
    damaged (the champion comparison could not have run). `extra` ({name: file}) is copied into
    the version too (e.g. data_stats.json, the data it was trained on). Returns current.json's content."""
    home = _root(home)
    files = _export_files(export_dir)
    if "blessed" in metrics and metrics["blessed"] is not True:
        reasons = "; ".join((metrics.get("blessing") or {}).get("reasons") or []) or "blessed: false"
        raise UserError(f"{export_dir}: its evaluation did not bless it ({reasons}); only a blessed model is published")
    parent, stem, ckpt_files = _checkpoint_files(checkpoint)
    previous = champion(home)
    token = uuid.uuid4().hex
    version = _claim(home, token, str((provenance or {}).get("run") or ""))
    folder = version_dir(home, version)
    storage.copy_tree(export_dir, storage.join(folder, "export"), files)
    storage.copy_tree(export_dir, folder, ["label_map.pbtxt"])
    if ckpt_files:
        storage.copy_tree(parent, storage.join(folder, "checkpoint"), ckpt_files)
        if "config.yaml" in files:  # the architecture beside the checkpoint (warm starts rebuild it)
            storage.copy_tree(export_dir, storage.join(folder, "checkpoint"), ["config.yaml"])
    for name, source in (extra or {}).items():
        storage.write_bytes(storage.join(folder, name), storage.read_bytes(source))
    storage.write_text(storage.join(folder, "metrics.json"), json.dumps(metrics, indent=1, default=str) + "\n")
    doc = {**(provenance or {}), "version": version, **{k: metrics.get(k) for k in HEADLINE},
           "blessed": metrics.get("blessed"), "created": _now(), "checkpoint": f"checkpoint/{stem}" if stem else None,
           "previous": previous["version"] if previous else None, "claim": token}
    storage.write_text(storage.join(folder, VERSION_FILE), json.dumps(doc, indent=1, default=str) + "\n")
    return _make_current(home, doc, reason="published")


def _make_current(home: str, doc: dict, reason: str) -> dict:
    current = {"version": doc["version"], **{k: doc.get(k) for k in HEADLINE},
               "fingerprint": doc.get("fingerprint"), "data_fingerprint": doc.get("data_fingerprint"),
               "path": f"{VERSIONS}/{doc['version']}", "since": _now(), "reason": reason}
    storage.replace_text(storage.join(home, CURRENT), json.dumps(current, indent=1, default=str) + "\n")
    return current


def promote(home: str, version: str) -> dict:
    """Makes a complete, blessed version of this home current (rollback or roll-forward): rewrites
    only current.json, so it is also the way out of a damaged current.json. VERSION is a number
    (1 or 0001), never a path."""
    home = _root(home)
    folders = _scan(home)
    if not folders and not storage.exists(home):
        raise UserError(f"{home}: no such model home; pass the --model-home folder the pipeline publishes to")
    versions, _ = inspect_home(home)
    known = ", ".join(v["version"] for v in versions if v["complete"]) or "none"
    text = str(version).strip()
    if not re.fullmatch(r"[0-9]+", text):
        raise UserError(f"{home}: {json.dumps(str(version))[:60]} is not a version number of this home "
                        f"(complete versions: {known}); see `odpipe models list {home}`")
    name = f"{int(text):04d}"
    if name not in folders:
        raise UserError(f"{home}: version {name} is missing or incomplete (complete versions: {known}); "
                        f"see `odpipe models list {home}`")
    doc, problem = _check_version(home, name, folders[name])
    if problem:
        raise UserError(f"{home}: version {name} cannot be promoted: {problem} (complete versions: {known}); "
                        f"see `odpipe models list {home}`")
    pointer, damaged = _pointer(home)
    was = pointer["version"] if pointer else ("a damaged current.json" if damaged else "none")
    return _make_current(home, doc, reason=f"promoted (was {was})")


def record_attempt(home: str, fingerprint: str, info: dict) -> str:
    """Notes that a challenger trained on this fingerprint was not blessed; returns the path."""
    path = storage.join(_root(home), ATTEMPTS, f"{fingerprint}.json")
    storage.write_text(path, json.dumps({"fingerprint": fingerprint, "date": _now(), **info}, indent=1, default=str) + "\n")
    return path


def read_attempt(home: str, fingerprint: str) -> dict | None:
    """The note of a challenger not blessed on this fingerprint (None when there is none)."""
    if not home:
        return None
    path = storage.join(_root(home), ATTEMPTS, f"{fingerprint}.json")
    doc, problem = _load(path)
    if problem or (doc is not _MISSING and not isinstance(doc, dict)):
        raise UserError(f"{path}: {problem or 'not a JSON object'}; delete it (it only notes a challenger "
                        "that was not blessed) and run again")
    return None if doc is _MISSING else doc


# -- CLI -----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="versions with mAP, blessed, date, fingerprint; * marks the current one")
    listing.add_argument("home", help="the model home (local folder or gs://...)")
    promote_p = sub.add_parser("promote", help="make VERSION the model in service (rollback / roll-forward)")
    promote_p.add_argument("home", help="the model home (local folder or gs://...)")
    promote_p.add_argument("version", help="version number, e.g. 0001 or 1")


def _fmt(value) -> str:
    return "   n/a" if not isinstance(value, (int, float)) else f"{value:.4f}"


def run(args: argparse.Namespace) -> int:
    home = _root(args.home)
    if args.action == "promote":
        current = promote(home, args.version)
        print(f"{home}: version {current['version']} is current (mAP {_fmt(current.get('mAP')).strip()})")
        moved = registry.move_default_alias(version_dir(home, current["version"]), current["version"])
        if moved:
            print(f"{moved['model']}@{moved['version_id']} is the registry's default version")
        return 0
    versions, problem = inspect_home(home)
    if not versions and not problem:
        raise UserError(f"{home}: no model versions here; pass the --model-home folder the pipeline publishes to")
    print(f"  {'version':<8} {'mAP':>7} {'mAP@0.5':>7} {'blessed':<7}  {'created':<25} {'fingerprint':<14} run")
    for v in versions:
        mark = "*" if v["current"] else " "
        if v["problem"]:
            print(f"{mark} {v['version']:<8} ({v['problem']}: skipped)")
            continue
        blessed = {True: "yes", False: "no"}.get(v["blessed"], "?")
        print(f"{mark} {v['version']:<8} {_fmt(v.get('mAP'))} {_fmt(v.get('mAP@0.5'))} {blessed:<7}  "
              f"{str(v.get('created')):<25} {str(v.get('fingerprint') or '')[:12]:<14} {v.get('run') or ''}")
    if problem:  # after the table, so the versions to promote are on screen
        raise UserError(f"{problem}; {_fix(home)}")
    if not any(v["current"] for v in versions):
        print(f"(no {CURRENT}: no version is in service yet)")
    return 0
