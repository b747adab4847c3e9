"""The model home: every published model, versioned, and a pointer to the one in service.

    HOME/                      (a local folder or gs://BUCKET/PATH)
      current.json             {"version": "0002", "mAP": ..., ...}: the model in service
      versions/0001/
        export/                the evaluated export (saved_model/, label_map.pbtxt, model.tflite, ...)
        checkpoint/            the checkpoint it was exported from, with its config.yaml (warm starts)
        label_map.pbtxt        its label map (the next run extends it, so class ids never move)
        metrics.json           its evaluation, champion figures included
        version.json           where it came from: fingerprint, run, parameters, date
      attempts/FINGERPRINT.json  challengers that were not blessed (an unchanged rerun is skipped)

The rules that make a killed run harmless (the way TFX's Pusher and the Model Registry work):
- history is append-only: a version number is never reused, a version folder never rewritten;
- `version.json` is the last file of a version, so a folder without it is an incomplete
  publish, listed as such and never made current;
- `current.json` is written last of all, in one piece (`storage.replace_text`): it is the commit
  point, and it always names a complete version. Rollback and roll-forward rewrite only it.

    odpipe models list HOME
    odpipe models promote HOME VERSION
"""

from __future__ import annotations

import argparse
import datetime
import json
from typing import Any

from odpipe import storage
from odpipe.errors import UserError

CURRENT = "current.json"
VERSIONS = "versions"
ATTEMPTS = "attempts"
VERSION_FILE = "version.json"
HEADLINE = ("mAP", "mAP@0.5", "mAP@0.75", "recall")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _read_json(path: str) -> Any:
    try:
        return json.loads(storage.read_text(path))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err}); restore it or promote a version with "
                        "`odpipe models promote HOME VERSION`") from None


def version_dir(home: str, version: str) -> str:
    return storage.join(str(home).rstrip("/"), VERSIONS, version)


def read_current(home: str) -> dict | None:
    """current.json of the home (None for an empty or new home)."""
    if not home:
        return None
    doc = _read_json(storage.join(str(home).rstrip("/"), CURRENT))
    if doc is not None and not (isinstance(doc, dict) and isinstance(doc.get("version"), str)):
        raise UserError(f"{home}/{CURRENT}: has no \"version\"; promote one with `odpipe models promote {home} VERSION`")
    return doc


def list_versions(home: str) -> list[dict]:
    """Every version folder, oldest first: {"version", "complete", "current", ...version.json}."""
    root = storage.join(str(home).rstrip("/"), VERSIONS)
    names: dict[str, bool] = {}
    for rel, _, _ in storage.stat_files(root):
        name, _, rest = rel.partition("/")
        names[name] = names.get(name, False) or rest == VERSION_FILE
    current = read_current(home) or {}
    out = []
    for name in sorted(names):
        doc = _read_json(storage.join(root, name, VERSION_FILE)) if names[name] else None
        out.append({**(doc or {}), "version": name, "complete": doc is not None,
                    "current": name == current.get("version")})
    return out


def next_version(home: str) -> str:
    """The next number: one past every folder ever started (complete or not), so none is reused."""
    numbers = [int(v["version"]) for v in list_versions(home) if v["version"].isdigit()]
    return f"{max(numbers, default=0) + 1:04d}"


def champion(home: str) -> dict | None:
    """The model in service with the paths a run needs (export, label map, checkpoint), or None."""
    current = read_current(home)
    if current is None:
        return None
    folder = version_dir(home, current["version"])
    doc = _read_json(storage.join(folder, VERSION_FILE))
    if doc is None:
        raise UserError(f"{home}/{CURRENT} names version {current['version']}, which is incomplete or missing; "
                        f"promote a complete one with `odpipe models promote {home} VERSION` (see `odpipe models list`)")
    return {**doc, **current, "dir": folder, "export": storage.join(folder, "export"),
            "label_map": storage.join(folder, "label_map.pbtxt"),
            "checkpoint": storage.join(folder, doc["checkpoint"]) if doc.get("checkpoint") else ""}


def warm_start_modules(checkpoint: str, label_map_path: str) -> str:
    """What a warm start from a version's checkpoint restores: everything when the classes are
    the same, else the backbone and decoder (the class head is re-initialised for the new classes).
    (The trainer rebuilds the version's architecture from the config.yaml beside the checkpoint.)"""
    from odpipe.label_map import read_label_map

    folder = str(checkpoint).rsplit("/", 2)[0]  # HOME/versions/NNNN/checkpoint/ckpt-N
    old = read_label_map(storage.join(folder, "label_map.pbtxt"))
    return "all" if old == read_label_map(label_map_path) else "backbone,decoder"


def publish(home: str, export_dir: str, metrics: dict, provenance: dict | None = None,
            checkpoint: str | None = None) -> dict:
    """Adds a new version (export, label map, metrics, checkpoint files, version.json last) and
    then makes it current (current.json last of all). Returns current.json's content."""
    home = str(home).rstrip("/")
    files = storage.list_files(export_dir)
    if not files:
        raise UserError(f"{export_dir}: export folder is empty or missing; run `odpipe export` first")
    if "label_map.pbtxt" not in files:
        raise UserError(f"{export_dir}: export has no label_map.pbtxt; export it again with `odpipe export`")
    previous = read_current(home)
    version = next_version(home)
    folder = version_dir(home, version)
    storage.copy_tree(export_dir, storage.join(folder, "export"), files)
    storage.copy_tree(export_dir, folder, ["label_map.pbtxt"])
    checkpoint_rel = None
    if checkpoint:
        prefix = str(checkpoint)
        parent, _, stem = prefix.rpartition("/")
        ckpt_files = [p for p in storage.list_files(parent) if "/" not in p and p.startswith(stem + ".")] if parent else []
        if not ckpt_files:
            raise UserError(f"{prefix}: no checkpoint files; pass the prefix of a saved checkpoint (e.g. model/best/ckpt-100)")
        storage.copy_tree(parent, storage.join(folder, "checkpoint"), ckpt_files)
        if "config.yaml" in files:  # the architecture beside the checkpoint (warm starts rebuild it)
            storage.copy_tree(export_dir, storage.join(folder, "checkpoint"), ["config.yaml"])
        checkpoint_rel = f"checkpoint/{stem}"
    storage.write_text(storage.join(folder, "metrics.json"), json.dumps(metrics, indent=1, default=str) + "\n")
    headline = {k: metrics.get(k) for k in HEADLINE}
    doc = {"version": version, **headline, "created": _now(), "checkpoint": checkpoint_rel,
           "previous": previous.get("version") if previous else None, **(provenance or {})}
    storage.write_text(storage.join(folder, VERSION_FILE), json.dumps(doc, indent=1, default=str) + "\n")
    return _make_current(home, doc, reason="published")


def _make_current(home: str, doc: dict, reason: str) -> dict:
    current = {"version": doc["version"], **{k: doc.get(k) for k in HEADLINE},
               "fingerprint": doc.get("fingerprint"), "data_fingerprint": doc.get("data_fingerprint"),
               "path": f"{VERSIONS}/{doc['version']}", "since": _now(), "reason": reason}
    storage.replace_text(storage.join(home, CURRENT), json.dumps(current, indent=1, default=str) + "\n")
    return current


def promote(home: str, version: str) -> dict:
    """Makes an existing complete version current (rollback or roll-forward): rewrites only current.json."""
    home = str(home).rstrip("/")
    if not storage.exists(home) and not storage.glob(home + "/*"):
        raise UserError(f"{home}: no such model home; pass the --model-home folder the pipeline publishes to")
    version = f"{int(version):04d}" if str(version).isdigit() else str(version)
    doc = _read_json(storage.join(version_dir(home, version), VERSION_FILE))
    if doc is None:
        known = ", ".join(v["version"] for v in list_versions(home) if v["complete"]) or "none"
        raise UserError(f"{home}: version {version} is missing or incomplete (complete versions: {known}); "
                        f"see `odpipe models list {home}`")
    previous = read_current(home)
    return _make_current(home, doc, reason=f"promoted (was {previous['version'] if previous else 'none'})")


def record_attempt(home: str, fingerprint: str, info: dict) -> str:
    """Notes that a challenger trained on this fingerprint was not blessed; returns the path."""
    path = storage.join(str(home).rstrip("/"), ATTEMPTS, f"{fingerprint}.json")
    storage.write_text(path, json.dumps({"fingerprint": fingerprint, "date": _now(), **info}, indent=1, default=str) + "\n")
    return path


def read_attempt(home: str, fingerprint: str) -> dict | None:
    return _read_json(storage.join(str(home).rstrip("/"), ATTEMPTS, f"{fingerprint}.json")) if home else None


# -- CLI -----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="versions with mAP, date, fingerprint; * marks the current one")
    listing.add_argument("home", help="the model home (local folder or gs://...)")
    promote_p = sub.add_parser("promote", help="make VERSION the model in service (rollback / roll-forward)")
    promote_p.add_argument("home", help="the model home (local folder or gs://...)")
    promote_p.add_argument("version", help="version number, e.g. 0001 or 1")


def _fmt(value) -> str:
    return "   n/a" if not isinstance(value, (int, float)) else f"{value:.4f}"


def run(args: argparse.Namespace) -> int:
    if args.action == "promote":
        current = promote(args.home, args.version)
        print(f"{args.home}: version {current['version']} is current (mAP {_fmt(current.get('mAP')).strip()})")
        return 0
    versions = list_versions(args.home)
    if not versions:
        raise UserError(f"{args.home}: no model versions here; pass the --model-home folder the pipeline publishes to")
    print(f"  {'version':<8} {'mAP':>7} {'mAP@0.5':>7}  {'created':<25} {'fingerprint':<14} run")
    for v in versions:
        mark = "*" if v["current"] else " "
        if not v["complete"]:
            print(f"{mark} {v['version']:<8} (incomplete publish: ignored)")
            continue
        print(f"{mark} {v['version']:<8} {_fmt(v.get('mAP'))} {_fmt(v.get('mAP@0.5'))}  {str(v.get('created')):<25} "
              f"{str(v.get('fingerprint') or '')[:12]:<14} {v.get('run') or ''}")
    return 0
