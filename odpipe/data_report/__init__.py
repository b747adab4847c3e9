"""`odpipe data-report`: look at the data before spending GPU hours on it.

    odpipe data-report LABELS.csv [--split DIR] [--images-dir DIR] [--model PRESET] [--image-size N]
                       [--previous data_stats.json] [--strict] -o OUTDIR

Writes OUTDIR/data_report.html (self-contained: plots and thumbnails embedded as data URIs, so it
opens from a bucket or a pipeline UI), the plots as PNG beside it, and OUTDIR/data_stats.json:
per split and per class counts, box sizes (pixels, relative, at the model's input size, with the
share no anchor can match), aspect ratios, box centres, image facts (formats, grayscale/CMYK,
EXIF rotation, damage, exact and near duplicates), the anomalies of the checks
(`odpipe.data_report.checks`) and, with `--previous` (the data_stats.json stored with the model
in service), the drift (`odpipe.data_report.drift`). `--strict` makes errors exit with code 2.

Modules: geometry (input size, anchors), stats (labels), images (files), checks, drift, plots,
gallery, html; `build_report` is the one entry point (the CLI and the pipeline task call it).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from odpipe import storage
from odpipe.data_report import gallery, plots
from odpipe.data_report.checks import Thresholds, run_checks
from odpipe.data_report.drift import compare, load_stats
from odpipe.data_report.geometry import model_geometry
from odpipe.data_report.html import render
from odpipe.data_report.images import scan_images, summarise
from odpipe.data_report.stats import image_sizes, load_labels, split_stats
from odpipe.errors import UserError
from odpipe.train.config import experiment_config
from odpipe.train.input_size import choose_input_size
from odpipe.train.presets import DEFAULT_PRESET

HTML_NAME = "data_report.html"
STATS_NAME = "data_stats.json"


def _headline(splits: dict, anomalies: list[dict], images: dict | None) -> dict:
    whole = splits["all"]
    errors = sum(a["severity"] == "error" for a in anomalies)
    return {
        "images": whole["images"], "objects": whole["objects"], "classes": len(whole["classes"]),
        "empty_images": whole["empty_images"],
        "eval_images": splits["eval"]["images"] if "eval" in splits else None,
        "eval_objects": splits["eval"]["objects"] if "eval" in splits else None,
        "unmatchable_share": whole["unmatchable_share"],
        "duplicate_groups": len(images["duplicates"]) if images else None,
        "errors": errors, "warnings": len(anomalies) - errors,
    }


def _plots(labels, boxes, splits: dict, geometry, drift: dict | None) -> dict[str, bytes]:
    out = {
        "class_counts": plots.class_counts_png(splits),
        "box_sizes": plots.box_sizes_png(labels, boxes, geometry),
        "aspect_ratios": plots.aspect_png(labels, boxes, geometry),
        "box_centres": plots.centres_png(boxes),
        "image_sizes": plots.image_sizes_png(labels, geometry),
        "objects_per_image": plots.objects_per_image_png(labels),
    }
    if drift is not None:
        out["drift"] = plots.drift_png(drift)
    return out


def _scan(images_dir: str, labels, progress: bool) -> dict:
    if not storage.is_dir(str(images_dir)):
        raise UserError(f"{images_dir}: images folder not found; check --images-dir")
    summary = summarise(scan_images(str(images_dir), sorted(labels.images), progress=progress), labels.images)
    summary["sizes"] = image_sizes(labels)
    return summary


def chosen_input_size(labels, model: str) -> int:
    """The input size `odpipe train` chooses for these boxes when --image-size is not given."""
    config = experiment_config(model)
    w = labels.boxes[:, 2] - labels.boxes[:, 0]
    h = labels.boxes[:, 3] - labels.boxes[:, 1]
    longer = np.maximum(labels.sizes[:, 0], labels.sizes[:, 1]).astype(float) if len(labels.sizes) else np.zeros(0)
    sides = np.sqrt(np.clip(w, 0, None) * np.clip(h, 0, None)) / np.maximum(longer, 1)
    return choose_input_size(sides, config.task)[0]


def build_report(labels_csv: str, out_dir: str, splits_dir: str | None = None, images_dir: str | None = None,
                 image_size: int | None = None, model: str = DEFAULT_PRESET, previous_stats: str | None = None,
                 strict: bool = False, thresholds: Thresholds | None = None, progress: bool = True) -> dict:
    """Write OUT_DIR/data_report.html, data_stats.json and the plots (local or gs://).

    Returns {"headline": {...}, "anomalies": [...], "html": path, "stats": path}. With `strict`, a
    UserError (exit code 2) after writing when any check found an error. `previous_stats` is the
    data_stats.json of the data that trained the model in service (drift)."""
    thresholds = thresholds or Thresholds()
    out_dir = str(out_dir)
    storage.make_writable_dir(out_dir)
    labels = load_labels(str(labels_csv), splits_dir or None)
    if not image_size:  # None or 0: the size training will choose from the same boxes (odpipe.train.input_size)
        image_size = chosen_input_size(labels.get("train", labels["all"]), model)
    geometry = model_geometry(model, int(image_size))
    splits = {name: split_stats(lab, geometry) for name, lab in labels.items()}
    boxes = {name: s.pop("_boxes") for name, s in splits.items()}
    side_of = {f: side for side in ("train", "eval") if side in labels for f in labels[side].images}
    images = _scan(images_dir, labels["all"], progress) if images_dir else None
    anomalies = run_checks(splits, geometry, images, side_of, thresholds)
    stats = {"version": 1, "source": {"labels_csv": str(labels_csv), "splits_dir": splits_dir or None,
                                      "images_dir": images_dir or None},
             "model": geometry.as_dict(), "splits": splits, "images": images, "drift": None}
    if previous_stats:
        stats["drift"], found = compare(stats, load_stats(str(previous_stats)))
        anomalies = sorted(anomalies + found, key=lambda a: a["severity"] != "error")
    stats["anomalies"] = anomalies
    stats["headline"] = _headline(splits, anomalies, images)
    pngs = _plots(labels["all"], boxes["all"], splits, geometry, stats["drift"])
    for name, png in pngs.items():
        storage.write_bytes(storage.join(out_dir, f"{name}.png"), png)
    sections, thumbs = [], {}
    if images is not None:
        sections = gallery.pick(labels["all"], boxes["all"])
        thumbs = gallery.thumbnails(str(images_dir), labels["all"], boxes["all"], {n for _, g in sections for n in g})
    html_path, stats_path = storage.join(out_dir, HTML_NAME), storage.join(out_dir, STATS_NAME)
    storage.write_text(html_path, render(stats, pngs, sections, thumbs))
    storage.write_text(stats_path, json.dumps(stats, indent=1, sort_keys=False) + "\n")
    errors = [a for a in anomalies if a["severity"] == "error"]
    if strict and errors:
        raise UserError(f"{labels_csv}: {len(errors)} error(s) in the data (first: {errors[0]['message']}); "
                        f"see {html_path}")
    return {"headline": stats["headline"], "anomalies": anomalies, "html": html_path, "stats": stats_path}


def add_data_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labels_csv", help="labels CSV (from `odpipe csv`)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for data_report.html, data_stats.json, plots")
    parser.add_argument("--split", dest="splits_dir", metavar="DIR", help="folder with train.csv and eval.csv (from `odpipe split`)")
    parser.add_argument("--images-dir", metavar="DIR", help="folder the CSV's filenames are relative to (image facts, duplicates, "
                        "gallery); without it the report covers the labels only")
    parser.add_argument("--model", default=DEFAULT_PRESET, metavar="PRESET", help=f"preset or experiment (default {DEFAULT_PRESET}): "
                        "its input size and anchors")
    parser.add_argument("--image-size", type=int, metavar="N", help="input size to judge box sizes at (default: the model's)")
    parser.add_argument("--previous", metavar="STATS_JSON", help="data_stats.json of the data that trained the model in service (drift)")
    parser.add_argument("--min-eval-objects", type=int, default=Thresholds.min_eval_objects, metavar="N",
                        help=f"warn for classes with fewer eval objects (default {Thresholds.min_eval_objects})")
    parser.add_argument("--strict", action="store_true", help="exit with code 2 when a check finds an error")


def run_data_report(args: argparse.Namespace) -> int:
    for flag, value in (("--image-size", args.image_size), ("--min-eval-objects", args.min_eval_objects)):
        if value is not None and value < 1:
            raise UserError(f"{flag} {value}: must be a positive number")
    result = build_report(args.labels_csv, args.output, splits_dir=args.splits_dir, images_dir=args.images_dir,
                          image_size=args.image_size, model=args.model, previous_stats=args.previous,
                          strict=args.strict, thresholds=Thresholds(min_eval_objects=args.min_eval_objects))
    h = result["headline"]
    for a in result["anomalies"]:
        print(f"{a['severity']}: {a['message']}")
    print(f"{h['images']} images, {h['objects']} objects, {h['classes']} classes; {h['errors']} error(s), "
          f"{h['warnings']} warning(s)")
    print(f"data report: {result['html']}")
    return 0
