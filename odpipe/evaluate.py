"""`odpipe evaluate`: COCO metrics, confusion matrix, PR curves and an HTML report for an
exported model (the thing that gets deployed) on eval TFRecords.

    odpipe evaluate --model EXPORT_DIR --data 'records/eval-*.tfrecord' -o REPORT_DIR \\
        [--min-map 0.5] [--champion SERVING_EXPORT_DIR [--margin 0.01]]

--model EXPORT_DIR/model.tflite evaluates the TFLite model (float, fp16 or int8) instead, on the
same records by the same code, so its accuracy loss against the SavedModel is measured.

Writes REPORT_DIR/metrics.json, confusion_matrix.png, pr_curves.png and report.html (local or
gs://). Decisions, all stated here so the numbers can be trusted:

* Metrics are pycocotools' COCOeval (bbox) on COCO objects built in memory from the records,
  with every detection the model returns (no score threshold; COCO keeps the top 100 per image).
  "mAP" is AP@[0.5:0.95], "recall" is AR@100, "per_class" is by class name from the label map.
  A class without ground truth has AP null and is left out of the means (COCO's rule).
* VOC "difficult" objects (image/object/difficult=1) and crowd objects (image/object/is_crowd=1)
  become COCO `iscrowd=1` ground truth: they are neither needed (a miss costs nothing) nor
  punished (a detection on one is ignored, not a false positive). pycocotools matches a
  detection to a crowd box by intersection over the detection's area.
* The confusion matrix counts detections with score >= --score-threshold (default 0.5) at
  IoU >= 0.5. Rows are ground truth, columns predictions, each with a final "background" entry:
  a missed object is (class, background), a false alarm (background, class). Matching is greedy
  by IoU, same-class pairs first, then any class (a box found with the wrong label is a
  confusion, not a miss plus a false alarm). Detections on difficult/crowd boxes are ignored.
  per_class also gives "precision@threshold" and "recall@threshold" read from that matrix.
* "blessed": mAP >= --min-map (when given) and mAP >= the --champion's mAP + --margin (when
  given); neither given -> blessed, and the reasons say so. Undefined mAP -> not blessed. The
  champion (the model in service) is scored here, by the same code on the same records with the
  same ignore rules, over the new model's classes: its detections are matched to the new label
  map by class name, and a class it never saw scores AP 0 for it. Comparing with an mAP computed
  on another eval set would not be fair once the data grows.
* An image the model cannot decode is skipped, counted and listed under "skipped"; records whose
  class ids disagree with the model's label map are an error (rebuild the records).
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import itertools
import json
import math

import numpy as np

from odpipe import storage
from odpipe.errors import UserError

# The numbers (pure): odpipe/metrics.py; re-exported here, where they have always been imported from.
from odpipe.metrics import (  # noqa: E402,F401
    COCO_STAT_NAMES,
    IOU_THRESHOLD,
    EvalImage,
    GroundTruth,
    bless,
    champion_summary,
    coco_metrics,
    confusion_matrix,
    image_errors,
    iou_matrix,
    match_image,
    to_label_map_ids,
)
from odpipe.progress import progress_bar

# Imported inside functions: odpipe.detector and odpipe.report (TensorFlow, matplotlib: seconds) only when a model is evaluated.

# -- reading the eval records --------------------------------------------------------------------


def _serialized_batches(path: str, batch_size: int):
    """Lists of serialized tf.train.Example from one TFRecord file (local or `gs://`) through the one
    TFRecord reader (`odpipe.records.tfrecord.read_records`: TensorFlow's reader, CRCs checked; a
    corrupt file is a UserError)."""
    from odpipe.records.tfrecord import read_records

    records = read_records(path)
    while batch := list(itertools.islice(records, batch_size)):
        yield batch


def parse_example(serialized: bytes, path: str) -> dict:
    """The fields evaluate needs from one record written by `odpipe tfrecord` (`odpipe.schema`)."""
    from odpipe import schema

    rec = schema.parse_example(serialized, path)
    labels = [int(v) for v in rec["labels"]]
    n = len(labels)
    if any(len(rec[k]) != n for k in ("xmin", "ymin", "xmax", "ymax")):
        raise UserError(f"{path}: a record's box and label counts differ; rewrite the records with `odpipe tfrecord`")
    texts = rec["classes"]
    difficult = [int(v) for v in rec["difficult"]] or [0] * n
    crowd = [int(v) for v in rec["is_crowd"]] or [0] * n
    return {
        "encoded": rec["encoded"],
        "filename": rec["filename"] or rec["source_id"],
        "width": max(int(rec["width"]), 0),
        "height": max(int(rec["height"]), 0),
        "boxes": list(zip(rec["xmin"], rec["ymin"], rec["xmax"], rec["ymax"])),
        "labels": labels,
        "texts": texts if len(texts) == n else [""] * n,
        "ignore": [bool(d or c) for d, c in zip(difficult + [0] * n, crowd + [0] * n)][:n],
    }


def _expected_images(patterns: list[str]) -> int | None:
    """Image count from the records' summary.json (odpipe tfrecord), for the progress bar."""
    total = 0
    for pattern in patterns:
        if not pattern.endswith("-*.tfrecord"):
            return None
        try:
            total += int(json.loads(storage.read_text(pattern[: -len("-*.tfrecord")] + ".summary.json"))["images"])
        except Exception:  # noqa: BLE001 - only a progress-bar hint
            return None
    return total


# -- the stage -----------------------------------------------------------------------------------


def _check_arguments(patterns: list[str], min_map, margin, score_threshold) -> list[str]:
    """The record files to evaluate; one-line errors for bad arguments."""
    from odpipe.records import shard_files  # the summary is the manifest of a complete shard set

    files = sorted({f for p in patterns for f in shard_files(p)})
    if not files:
        raise UserError(f"{' '.join(patterns)}: no TFRecord file matches; check the pattern (e.g. records/eval-*.tfrecord)")
    if min_map is not None and (not isinstance(min_map, (int, float)) or not 0.0 <= min_map <= 1.0):
        raise UserError(f"--min-map {min_map!r}: must be a number between 0 and 1 (an mAP, e.g. 0.5)")
    if not isinstance(margin, (int, float)) or math.isnan(margin) or margin < 0:
        raise UserError(f"--margin {margin!r}: must be a number >= 0 (e.g. 0.01)")
    if not 0.0 <= score_threshold <= 1.0:
        raise UserError(f"--score-threshold {score_threshold}: must be between 0 and 1")
    return files


def _check_labels(rec: dict, label_map: dict[int, str], path: str) -> None:
    for label, text in zip(rec["labels"], rec["texts"]):
        if label not in label_map or (text and text != label_map[label]):
            raise UserError(
                f"{path}: class id {label} is {text!r} in the records but "
                f"{label_map.get(label, 'absent')!r} in the model's label map; "
                "rebuild the records with the label map the model was trained on"
            )


class _Scoring:
    """What one pass over the records accumulates: the scored images (challenger's detections),
    the champion's detections, the confusion matrix, the skipped records and the worst images."""

    def __init__(self, detector, rival, score_threshold: float, report_images: int):
        self.detector, self.rival = detector, rival
        self.label_map = detector.label_map
        self.class_index = {cid: k for k, cid in enumerate(sorted(self.label_map))}
        self.background = len(self.class_index)
        self.score_threshold, self.report_images = score_threshold, report_images
        self.images: list[EvalImage] = []
        self.rival_detections: list[list] = []  # the champion's detections, image by image
        self.skipped: list[dict] = []
        self.worst: list = []  # min-heap of (errors, -index, EvalImage, encoded) keeping the worst N
        self.matrix = np.zeros((self.background + 1,) * 2, dtype=np.int64)

    def batch(self, batch: list[bytes], path: str) -> None:
        parsed = [parse_example(s, path) for s in batch]
        encoded = [p["encoded"] for p in parsed]
        results = self.detector.detect_bytes(encoded)
        rival_results = self.rival.detect_bytes(encoded) if self.rival else [None] * len(parsed)
        for rec, raw, rival_raw in zip(parsed, results, rival_results):
            self.record(rec, raw, rival_raw, path)

    def record(self, rec: dict, raw, rival_raw, path: str) -> None:
        from odpipe.detector import image_info

        if isinstance(raw, str):
            self.skipped.append({"file": f"{path}: {rec['filename'] or 'record'}",
                                 "reason": f"the model cannot decode the image: {raw}"})
            return
        width, height = rec["width"], rec["height"]
        if width <= 0 or height <= 0:
            info = image_info(rec["encoded"])
            width, height = (info[0], info[1]) if info else (0, 0)
        _check_labels(rec, self.label_map, path)
        image = EvalImage(
            image_id=len(self.images) + 1, filename=rec["filename"], width=width, height=height,
            ground_truth=[GroundTruth(label, (b[0] * width, b[1] * height, b[2] * width, b[3] * height), ign)
                          for b, label, ign in zip(rec["boxes"], rec["labels"], rec["ignore"])],
            detections=self.detector.to_detections(raw, width, height, 0.0),
        )
        self.images.append(image)
        if self.rival is not None:  # an image the champion cannot decode: no detections from it
            self.rival_detections.append([] if isinstance(rival_raw, str) else to_label_map_ids(
                self.rival.to_detections(rival_raw, width, height, 0.0), self.label_map))
        cells = match_image(image, self.class_index, self.score_threshold)
        for r, c in cells:
            self.matrix[r, c] += 1
        self.keep_if_worst((image_errors(cells, self.background), -image.image_id), image, rec["encoded"])

    def keep_if_worst(self, key, image, encoded: bytes) -> None:
        if self.report_images <= 0:
            return
        if len(self.worst) < self.report_images:
            heapq.heappush(self.worst, (key, image, encoded))
        elif key > self.worst[0][0]:
            heapq.heapreplace(self.worst, (key, image, encoded))


def _score(files: list[str], patterns: list[str], scoring: _Scoring, batch_size: int, progress: bool) -> None:
    bar = progress_bar(_expected_images(patterns), "evaluate", "img", progress)
    try:
        for path in files:
            for batch in _serialized_batches(path, batch_size):
                scoring.batch(batch, path)
                bar.update(len(batch))
    finally:
        bar.close()


def _operating_point(coco: dict, matrix, label_map: dict[int, str]) -> None:
    """Precision and recall at the score threshold (the confusion matrix's), per class."""
    for k, cid in enumerate(sorted(label_map)):
        tp, predicted, actual = int(matrix[k, k]), int(matrix[:, k].sum()), int(matrix[k, :].sum())
        entry = coco["per_class"][label_map[cid]]
        entry["precision@threshold"] = tp / predicted if predicted else None
        entry["recall@threshold"] = tp / actual if actual else None


def _metrics(scoring: _Scoring, coco: dict, rival_summary, blessing: tuple, settings: dict) -> dict:
    """metrics.json's content (without the file paths and provenance)."""
    stats, images, label_map = coco["stats"], scoring.images, scoring.label_map
    blessed, reasons = blessing
    return {
        "mAP": stats["mAP"], "mAP@0.5": stats["mAP@0.5"], "mAP@0.75": stats["mAP@0.75"], "recall": stats["AR@100"],
        "blessed": blessed,
        "blessing": {"reasons": reasons, "min_map": settings["min_map"], "margin": settings["margin"],
                     "champion_mAP": rival_summary["mAP"] if rival_summary else None},
        "champion": rival_summary,
        "per_class": coco["per_class"],
        "coco": stats,
        "images": len(images),
        "objects": sum(1 for im in images for g in im.ground_truth if not g.ignore),
        "ignored_objects": sum(1 for im in images for g in im.ground_truth if g.ignore),
        "detections": sum(len(im.detections) for im in images),
        "unknown_class_detections": coco["unknown_class_detections"],
        "skipped": scoring.skipped,
        "confusion_matrix": {
            "iou": IOU_THRESHOLD, "score_threshold": settings["score_threshold"],
            "labels": [label_map[cid] for cid in sorted(label_map)] + ["background"],
            "rows": "ground truth", "columns": "predicted", "matrix": scoring.matrix.tolist(),
        },
    }


def _write_report(metrics: dict, coco: dict, scoring: _Scoring, report_dir: str) -> None:
    from odpipe import report

    storage.makedirs(report_dir)
    cm_png = report.confusion_matrix_png(scoring.matrix, metrics["confusion_matrix"]["labels"])
    pr_png = report.pr_curves_png(coco["pr_curves"])
    storage.write_bytes(metrics["files"]["confusion_matrix"], cm_png)
    storage.write_bytes(metrics["files"]["pr_curves"], pr_png)
    threshold = metrics["confusion_matrix"]["score_threshold"]
    gallery = [report.gallery_entry(image, encoded, errors, threshold, scoring.label_map)
               for (errors, _), image, encoded in sorted(scoring.worst, key=lambda e: (-e[0][0], -e[0][1]))]
    storage.write_text(metrics["files"]["report"], report.render_html(metrics, cm_png, pr_png, gallery))
    storage.write_text(metrics["files"]["metrics"], json.dumps(metrics, indent=1) + "\n")


def evaluate(
    model,
    data,
    report_dir: str,
    min_map: float | None = None,
    champion=None,
    margin: float = 0.0,
    champion_version: str | None = None,
    score_threshold: float = 0.5,
    batch_size: int = 8,
    report_images: int = 24,
    progress: bool = True,
    provenance: dict | None = None,
) -> dict:
    """Evaluate the export at `model` on the TFRecords matching `data` (a pattern or a list);
    write metrics.json, confusion_matrix.png, pr_curves.png, report.html to `report_dir`.

    `champion` (an export folder or Detector: the model in service) is scored by the same code on
    the same images, ground truth and ignore rules, over the challenger's classes, and the model is
    blessed only if its mAP >= the champion's + `margin` (and >= `min_map`).
    `provenance` (e.g. the run's fingerprint) is recorded in metrics.json as given.
    Returns the metrics.json content."""
    from odpipe.detector import Detector

    patterns = [data] if isinstance(data, str) else [str(p) for p in data]
    files = _check_arguments(patterns, min_map, margin, score_threshold)
    champion = None if champion == "" else champion  # an empty pipeline parameter means no champion
    detector = model if isinstance(model, Detector) else Detector(model)
    rival = None if champion is None else champion if isinstance(champion, Detector) else Detector(champion, "--champion")
    scoring = _Scoring(detector, rival, score_threshold, report_images)
    try:
        _score(files, patterns, scoring, batch_size, progress)
    finally:
        if detector is not model:
            detector.close()
        if rival is not None and rival is not champion:
            rival.close()
    if not scoring.images:
        raise UserError(f"{' '.join(patterns)}: no image could be evaluated ({len(scoring.skipped)} skipped); "
                        "check the records")
    label_map = scoring.label_map
    coco = coco_metrics(scoring.images, label_map)
    rival_summary = None
    if rival is not None:
        rival_images = [dataclasses.replace(im, detections=d) for im, d in zip(scoring.images, scoring.rival_detections)]
        rival_summary = champion_summary(coco_metrics(rival_images, label_map), rival, label_map, champion_version)
    blessing = bless(coco["stats"]["mAP"], min_map, rival_summary, margin)
    _operating_point(coco, scoring.matrix, label_map)
    metrics = _metrics(scoring, coco, rival_summary, blessing,
                       {"min_map": min_map, "margin": margin, "score_threshold": score_threshold})
    metrics.update({
        "model": str(getattr(detector, "export_dir", model)),
        "data": patterns,
        "files": {k: storage.join(report_dir, f) for k, f in (
            ("metrics", "metrics.json"), ("confusion_matrix", "confusion_matrix.png"),
            ("pr_curves", "pr_curves.png"), ("report", "report.html"))},
        **(provenance or {}),
    })
    _write_report(metrics, coco, scoring, report_dir)
    return metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="export folder written by `odpipe export -o`, or its model.tflite (the on-device model)")
    parser.add_argument("--data", required=True, action="append",
                        help="eval TFRecords pattern, e.g. 'records/eval-*.tfrecord' (local or gs://; repeatable)")
    parser.add_argument("-o", "--output", required=True, help="report folder (metrics.json, report.html, PNGs)")
    parser.add_argument("--min-map", type=float, help="bless only if mAP (0.5:0.95) is at least this")
    parser.add_argument("--champion", help="export folder of the model in service: scored on the same records; "
                        "bless only if not worse")
    parser.add_argument("--margin", type=float, default=0.0,
                        help="with --champion: the new mAP must beat the champion's by this much (default 0)")
    parser.add_argument("--score-threshold", type=float, default=0.5,
                        help="minimum score for the confusion matrix and drawn images (default 0.5)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per model call (default 8)")
    parser.add_argument("--report-images", type=int, default=24, help="eval images shown in report.html, worst first (default 24)")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def run(args: argparse.Namespace) -> int:
    metrics = evaluate(
        args.model, args.data, args.output, min_map=args.min_map, champion=args.champion, margin=args.margin,
        score_threshold=args.score_threshold, batch_size=args.batch_size, report_images=args.report_images,
    )
    print(f"evaluated {metrics['images']} images, {metrics['objects']} objects "
          f"({metrics['ignored_objects']} difficult/crowd ignored), {len(metrics['skipped'])} skipped")
    print(f"mAP {_fmt(metrics['mAP'])}  mAP@0.5 {_fmt(metrics['mAP@0.5'])}  "
          f"mAP@0.75 {_fmt(metrics['mAP@0.75'])}  recall(AR@100) {_fmt(metrics['recall'])}")
    for name, pc in metrics["per_class"].items():
        print(f"  {name:<20} AP {_fmt(pc['AP'])}  AP@0.5 {_fmt(pc['AP@0.5'])}  ({pc['ground_truth']} objects)")
    for item in metrics["skipped"][:20]:
        print(f"skipped {item['file']}: {item['reason']}")
    if metrics["champion"]:
        champ = metrics["champion"]
        print(f"champion mAP {_fmt(champ['mAP'])}  mAP@0.5 {_fmt(champ['mAP@0.5'])} on the same records"
              + (f" (never saw: {', '.join(champ['unseen_classes'])})" if champ["unseen_classes"] else ""))
    print(f"blessed: {str(metrics['blessed']).lower()} ({'; '.join(metrics['blessing']['reasons'])})")
    print(f"wrote {metrics['files']['metrics']} and {metrics['files']['report']}")
    return 0
