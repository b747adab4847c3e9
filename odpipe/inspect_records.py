"""`odpipe inspect PATTERN`: read TFRecords back, summarise them, and prove they match a CSV.

    odpipe inspect 'records/train-*.tfrecord' --label-map label_map.pbtxt --csv train.csv

Prints images, objects, objects per class, image formats and box statistics. With `--label-map`
every (class/text, class/label) pair is checked against the map; with `--csv` the records must
hold exactly the CSV's images (by filename) with the same size and the same boxes (normalised and
clipped as `odpipe tfrecord` does, within 1e-5) and classes; any difference exits with code 1.
PATTERN may be a `gs://` glob; it is resolved through the records' summary (the manifest of a
complete shard set, `odpipe.records.shard_files`), so an interrupted write is refused, not half
read. Files are read with TensorFlow's TFRecord reader (framing CRCs checked) and each record is
parsed with `odpipe.schema.parse_example` (a payload that is not a tf.train.Example is a one-line
error).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from odpipe import schema
from odpipe.label_map import read_label_map
from odpipe.records import plan_images
from odpipe.records.output import shard_files
from odpipe.records.tfrecord import read_records as read_file

TOLERANCE = 1e-5
_MAX_LISTED = 20


def read_record_file(path: str):
    """Yield the serialized records of one TFRecord file (local or `gs://`), framing CRCs checked;
    a corrupt or truncated file is a UserError (TensorFlow's reader: `odpipe.records.tfrecord`)."""
    yield from read_file(path)


def read_records(pattern: str, paths: list[str] | None = None):
    """Yield (path, serialized record) for every record of the shard set `pattern` names (or of
    `paths`, when the caller has resolved them already with `odpipe.records.shard_files`)."""
    for path in shard_files(pattern) if paths is None else paths:
        for record in read_record_file(path):
            yield path, record


def parse_example(serialized: bytes, where: str = "record") -> dict:
    """The fields of one record as plain Python values (`odpipe.schema.parse_example`), with the
    size of the encoded image instead of its bytes."""
    rec = schema.parse_example(serialized, where)
    rec["encoded_bytes"] = len(rec.pop("encoded"))
    return rec


def _stats(values: list[float]) -> dict:
    if not values:
        return {"min": None, "mean": None, "max": None}
    return {"min": min(values), "mean": sum(values) / len(values), "max": max(values)}


def _objects(rec: dict) -> list[tuple]:
    return sorted(zip(rec["classes"], rec["xmin"], rec["ymin"], rec["xmax"], rec["ymax"]))


def compare_with_csv(records: dict[str, dict], csv_path: str, label_map: dict[int, str] | None) -> list[str]:
    """Differences between records (by filename) and a labels CSV; empty when they match."""
    frame = schema.read_labels(csv_path)
    classes = sorted({c for c in frame["class"] if c})
    lm = label_map or {i + 1: c for i, c in enumerate(classes)}
    lm = dict(lm)
    for name in classes:  # unknown classes are reported as a difference below, not as a plan error
        if name not in lm.values():
            lm[max(lm, default=0) + 1] = name
    plan = plan_images(frame, lm, csv_path)
    diffs = []
    if label_map:
        unknown = [c for c in classes if c not in label_map.values()]
        diffs += [f"class {c!r} of the CSV is not in the label map" for c in unknown]
    expected = {it["filename"]: it for it in plan["items"]}
    for name in sorted(set(expected) - set(records)):
        diffs.append(f"{name}: in the CSV but not in the records")
    for name in sorted(set(records) - set(expected)):
        diffs.append(f"{name}: in the records but not in the CSV")
    for name in sorted(set(expected) & set(records)):
        exp, rec = expected[name], records[name]
        if (rec["width"], rec["height"]) != (exp["width"], exp["height"]):
            diffs.append(f"{name}: records say {rec['width']}x{rec['height']}, CSV says {exp['width']}x{exp['height']}")
        want = sorted((o["class"], o["xmin"], o["ymin"], o["xmax"], o["ymax"]) for o in exp["objects"])
        got = _objects(rec)
        if len(want) != len(got):
            diffs.append(f"{name}: {len(got)} objects in the records, {len(want)} in the CSV")
            continue
        for w, g in zip(want, got):
            if w[0] != g[0] or any(abs(a - b) > TOLERANCE for a, b in zip(w[1:], g[1:])):
                diffs.append(f"{name}: object {g[0]} {tuple(round(v, 5) for v in g[1:])} differs from the CSV's "
                             f"{w[0]} {tuple(round(v, 5) for v in w[1:])}")
                break
    return diffs


class _Tally:
    """What inspect counts over the records, and the differences it finds in them."""

    def __init__(self, label_map: dict[int, str] | None):
        self.label_map = label_map
        self.ids = {name: i for i, name in (label_map or {}).items()}
        self.records: dict[str, dict] = {}
        self.diffs: list[str] = []
        self.per_class: Counter = Counter()
        self.formats: Counter = Counter()
        self.widths, self.heights, self.box_w, self.box_h, self.sizes = [], [], [], [], []
        self.source_ids: dict[str, str] = {}
        self.n = self.objects = self.empty = 0

    def add(self, rec: dict, path: str) -> None:
        self.n += 1
        name = rec["filename"]
        if name in self.records:
            self.diffs.append(f"{name}: appears in more than one record")
        self.records[name] = rec
        if rec["source_id"] in self.source_ids:
            other = self.source_ids[rec["source_id"]]
            self.diffs.append(f"{name}: image/source_id {rec['source_id']} also used by {other}")
        self.source_ids[rec["source_id"]] = name
        self.formats[rec["format"]] += 1
        self.widths.append(rec["width"])
        self.heights.append(rec["height"])
        self.sizes.append(rec["encoded_bytes"])
        n = len(rec["classes"])
        lengths = {len(rec[k]) for k in ("xmin", "ymin", "xmax", "ymax", "labels")}
        if lengths != {n}:
            self.diffs.append(f"{name} ({path}): box, class and label lists have different lengths")
        self.objects += n
        self.empty += n == 0
        self.per_class.update(rec["classes"])
        self._check_boxes(name, rec)

    def _check_boxes(self, name: str, rec: dict) -> None:
        for x0, y0, x1, y1 in zip(rec["xmin"], rec["ymin"], rec["xmax"], rec["ymax"]):
            self.box_w.append(x1 - x0)
            self.box_h.append(y1 - y0)
            if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
                self.diffs.append(f"{name}: box {(x0, y0, x1, y1)} is not a normalised box inside the image")
        if self.label_map is not None:
            for cls, label in zip(rec["classes"], rec["labels"]):
                expected = self.ids.get(cls)
                if expected != label:
                    self.diffs.append(f"{name}: class {cls!r} has label {label}, the label map says {expected}")


def inspect_records(pattern: str, label_map_path: str | None = None, csv_path: str | None = None) -> dict:
    """Report on the records matching `pattern`; "differences" lists every mismatch found."""
    label_map = read_label_map(label_map_path) if label_map_path else None
    files = shard_files(pattern)
    tally = _Tally(label_map)
    for path, serialized in read_records(pattern, files):
        tally.add(parse_example(serialized, path), path)
    diffs = tally.diffs
    if csv_path:
        diffs += compare_with_csv(tally.records, csv_path, label_map)
    return {
        "files": files,
        "images": tally.n,
        "objects": tally.objects,
        "empty_images": tally.empty,
        "classes": dict(sorted(tally.per_class.items())),
        "formats": dict(sorted(tally.formats.items())),
        "image_width": _stats(tally.widths),
        "image_height": _stats(tally.heights),
        "encoded_bytes": _stats(tally.sizes),
        "box_width": _stats(tally.box_w),
        "box_height": _stats(tally.box_h),
        "csv": csv_path,
        "matches_csv": (not diffs) if csv_path else None,
        "differences": diffs,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", help="TFRecord glob, e.g. 'records/train-*.tfrecord' (local or gs://)")
    parser.add_argument("--label-map", help="label_map.pbtxt; check every class/label pair against it")
    parser.add_argument("--csv", help="labels CSV the records must match exactly (exit 1 on any difference)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _fmt(stats: dict, digits: int = 3) -> str:
    if stats["min"] is None:
        return "-"
    return f"min {stats['min']:.{digits}f}  mean {stats['mean']:.{digits}f}  max {stats['max']:.{digits}f}"


def run(args: argparse.Namespace) -> int:
    report = inspect_records(args.pattern, label_map_path=args.label_map, csv_path=args.csv)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(f"{len(report['files'])} file(s), {report['images']} images ({report['empty_images']} without objects), "
              f"{report['objects']} objects")
        for name, count in report["classes"].items():
            print(f"  {name}: {count}")
        print("formats: " + ", ".join(f"{k}={v}" for k, v in report["formats"].items()))
        print(f"image width px:  {_fmt(report['image_width'], 1)}")
        print(f"image height px: {_fmt(report['image_height'], 1)}")
        print(f"box width (normalised):  {_fmt(report['box_width'])}")
        print(f"box height (normalised): {_fmt(report['box_height'])}")
        if args.csv:
            print(f"matches {args.csv}: {'yes' if report['matches_csv'] else 'NO'}")
        for diff in report["differences"][:_MAX_LISTED]:
            print(f"  difference: {diff}", file=sys.stderr)
        if len(report["differences"]) > _MAX_LISTED:
            print(f"  ... {len(report['differences']) - _MAX_LISTED} more (use --json)", file=sys.stderr)
    return 1 if report["differences"] else 0
