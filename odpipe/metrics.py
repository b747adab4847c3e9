"""The numbers of an evaluation, as pure functions (no I/O): COCO bbox metrics from pycocotools,
the confusion matrix at an IoU and score threshold, and the blessing rules (threshold, and the
champion scored on the same records). `odpipe.evaluate` runs a model over records and calls these;
its docstring states the decisions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
from dataclasses import dataclass, field

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

IOU_THRESHOLD = 0.5
COCO_STAT_NAMES = (
    "mAP", "mAP@0.5", "mAP@0.75", "mAP_small", "mAP_medium", "mAP_large",
    "AR@1", "AR@10", "AR@100", "AR_small", "AR_medium", "AR_large",
)


@dataclass
class GroundTruth:
    class_id: int
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in pixels
    ignore: bool = False  # difficult or crowd


@dataclass
class EvalImage:
    """One eval image: ground truth and every detection (pixels)."""

    image_id: int
    filename: str
    width: int
    height: int
    ground_truth: list[GroundTruth] = field(default_factory=list)
    detections: list = field(default_factory=list)  # odpipe.detector.Detection


# -- COCO metrics --------------------------------------------------------------------------------


def _xywh(box) -> list[float]:
    xmin, ymin, xmax, ymax = (float(v) for v in box)
    return [xmin, ymin, max(0.0, xmax - xmin), max(0.0, ymax - ymin)]


def _coco(dataset: dict):
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
    return coco


def _none_if_undefined(value) -> float | None:
    value = float(value)
    return None if value < 0 or math.isnan(value) else value


def _mean_defined(array: np.ndarray) -> float | None:
    values = array[array > -1]
    return float(values.mean()) if values.size else None


def coco_metrics(images: list[EvalImage], label_map: dict[int, str]) -> dict:
    """COCO bbox metrics from pycocotools, built in memory. Returns {"stats": {name: value},
    "per_class": {name: {...}}, "pr_curves": {name: (recall[], precision[])}} (IoU 0.5)."""
    categories = [{"id": int(i), "name": str(n)} for i, n in sorted(label_map.items())]
    gt_anns, dt_anns = _coco_annotations(images)
    image_entries = [
        {"id": int(im.image_id), "width": int(im.width), "height": int(im.height), "file_name": im.filename}
        for im in images
    ]
    coco_gt = _coco({"images": image_entries, "categories": categories, "annotations": gt_anns})
    coco_dt = _coco({"images": image_entries, "categories": categories, "annotations": dt_anns})
    evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {name: _none_if_undefined(v) for name, v in zip(COCO_STAT_NAMES, evaluator.stats)}
    n_gt = {c["id"]: 0 for c in categories}
    n_ignored = dict(n_gt)
    n_dt = dict(n_gt)
    for ann in gt_anns:
        counts = n_ignored if ann["iscrowd"] else n_gt
        counts[ann["category_id"]] = counts.get(ann["category_id"], 0) + 1
    for ann in dt_anns:
        n_dt[ann["category_id"]] = n_dt.get(ann["category_id"], 0) + 1
    per_class, pr_curves = _per_class(evaluator, label_map, n_gt, n_ignored, n_dt)
    unknown = sum(v for k, v in n_dt.items() if k not in label_map)
    return {"stats": stats, "per_class": per_class, "pr_curves": pr_curves, "unknown_class_detections": unknown}


def _coco_annotations(images: list[EvalImage]) -> tuple[list[dict], list[dict]]:
    """(ground-truth, detection) annotations in COCO's format (boxes as x, y, w, h)."""
    gt_anns, dt_anns = [], []
    for image in images:
        for gt in image.ground_truth:
            x, y, w, h = _xywh(gt.box)
            gt_anns.append({
                "id": len(gt_anns) + 1, "image_id": int(image.image_id), "category_id": int(gt.class_id),
                "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(gt.ignore),
            })
        for det in image.detections:
            x, y, w, h = _xywh(det.box)
            dt_anns.append({
                "id": len(dt_anns) + 1, "image_id": int(image.image_id), "category_id": int(det.class_id),
                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0, "score": float(det.score),
            })
    return gt_anns, dt_anns


def _per_class(evaluator, label_map: dict[int, str], n_gt: dict, n_ignored: dict, n_dt: dict) -> tuple[dict, dict]:
    """({name: AP, AP@0.5, AP@0.75, recall, counts}, {name: PR curve at IoU 0.5}) of an evaluated COCOeval."""
    precision = evaluator.eval["precision"]  # [T iou, R recall, K class, A area, M maxdets]
    recall = evaluator.eval["recall"]  # [T, K, A, M]
    iou_thrs = evaluator.params.iouThrs
    t50 = int(np.argmin(np.abs(iou_thrs - 0.5)))
    t75 = int(np.argmin(np.abs(iou_thrs - 0.75)))
    rec_thrs = evaluator.params.recThrs
    per_class, pr_curves = {}, {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        name = label_map[cat_id]
        p = precision[:, :, k, 0, -1]
        per_class[name] = {
            "id": int(cat_id),
            "AP": _mean_defined(p),
            "AP@0.5": _mean_defined(p[t50]),
            "AP@0.75": _mean_defined(p[t75]),
            "recall": _mean_defined(recall[:, k, 0, -1]),
            "ground_truth": n_gt[cat_id],
            "ignored_ground_truth": n_ignored[cat_id],
            "detections": n_dt[cat_id],
        }
        if (p[t50] > -1).any():
            pr_curves[name] = ([float(r) for r in rec_thrs], [float(max(v, 0.0)) for v in p[t50]])
    return per_class, pr_curves


# -- confusion matrix ----------------------------------------------------------------------------


def iou_matrix(a, b) -> np.ndarray:
    """IoU between boxes a [N, 4] and b [M, 4] (xmin, ymin, xmax, ymax) -> [N, M]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_image(image: EvalImage, class_index: dict[int, int], score_threshold: float, iou: float = IOU_THRESHOLD):
    """Confusion-matrix cells for one image: a list of (row, col) indices, where index
    len(class_index) is background. See the module docstring for the matching rule."""
    bg = len(class_index)
    gts = [g for g in image.ground_truth if not g.ignore]
    ignored = [g for g in image.ground_truth if g.ignore]
    dets = [d for d in image.detections if d.score >= score_threshold]
    ious = iou_matrix([g.box for g in gts], [d.box for d in dets])
    gt_free = [True] * len(gts)
    dt_free = [True] * len(dets)
    cells = []
    pairs = [(ious[i, j], i, j) for i in range(len(gts)) for j in range(len(dets)) if ious[i, j] >= iou]
    pairs.sort(key=lambda t: (-t[0], -dets[t[2]].score, t[1], t[2]))
    for same_class_only in (True, False):
        for _, i, j in pairs:
            if gt_free[i] and dt_free[j] and (not same_class_only or gts[i].class_id == dets[j].class_id):
                gt_free[i] = dt_free[j] = False
                cells.append((class_index.get(gts[i].class_id, bg), class_index.get(dets[j].class_id, bg)))
    ign = iou_matrix([g.box for g in ignored], [d.box for d in dets])
    for j, det in enumerate(dets):
        if dt_free[j] and not (ign.shape[0] and (ign[:, j] >= iou).any()):
            cells.append((bg, class_index.get(det.class_id, bg)))
    for i, gt in enumerate(gts):
        if gt_free[i]:
            cells.append((class_index.get(gt.class_id, bg), bg))
    return cells


def confusion_matrix(images: list[EvalImage], label_map: dict[int, str], score_threshold: float = 0.5,
                     iou: float = IOU_THRESHOLD) -> np.ndarray:
    """[(K+1) x (K+1)] counts; rows ground truth, columns predicted; last index background."""
    class_index = {cid: k for k, cid in enumerate(sorted(label_map))}
    matrix = np.zeros((len(class_index) + 1,) * 2, dtype=np.int64)
    for image in images:
        for r, c in match_image(image, class_index, score_threshold, iou):
            matrix[r, c] += 1
    return matrix


def image_errors(cells, background: int) -> int:
    """Misses + false alarms + confusions among one image's confusion cells."""
    return sum(1 for r, c in cells if r != c or r == background)


# -- blessing ------------------------------------------------------------------------------------


def bless(map_value: float | None, min_map: float | None = None, champion: dict | None = None,
          margin: float = 0.0) -> tuple[bool, list[str]]:
    """(blessed, reasons): mAP >= min_map (when given) and mAP >= the champion's mAP + margin (when
    a champion was evaluated on the same records). Neither -> blessed, and the reasons say so."""
    reasons: list[str] = []
    blessed = True
    if map_value is None:
        return False, ["mAP is undefined (the eval data holds no labelled object): not blessed"]
    if min_map is None and champion is None:
        return True, [f"mAP {map_value:.4f}; no --min-map and no champion: blessed by default"]
    if min_map is not None:
        if map_value >= min_map:
            reasons.append(f"mAP {map_value:.4f} >= --min-map {min_map:g}")
        else:
            blessed = False
            reasons.append(f"mAP {map_value:.4f} < --min-map {min_map:g}")
    if champion is not None:
        old = champion.get("mAP")
        who = f"the champion's ({champion['version']})" if champion.get("version") else "the champion's"
        bar = f" + margin {margin:g}" if margin else ""
        if old is None:
            reasons.append(f"{who} mAP is undefined on these records: nothing to compare against")
        elif map_value >= float(old) + margin - 1e-9:
            reasons.append(f"mAP {map_value:.4f} >= {who} {float(old):.4f}{bar} on the same eval records")
        else:
            blessed = False
            reasons.append(f"mAP {map_value:.4f} < {who} {float(old):.4f}{bar} on the same eval records")
    return blessed, reasons


def champion_summary(coco: dict, detector, label_map: dict[int, str], version: str | None) -> dict:
    """The champion's block of metrics.json: its figures on the challenger's records and classes.
    A class the champion's label map does not have scores AP 0 (it can never be detected)."""
    stats = coco["stats"]
    known = set(detector.label_map.values())
    return {
        "version": version,
        "model": str(getattr(detector, "export_dir", "")),
        "mAP": stats["mAP"],
        "mAP@0.5": stats["mAP@0.5"],
        "mAP@0.75": stats["mAP@0.75"],
        "recall": stats["AR@100"],
        "per_class": {name: {k: pc[k] for k in ("AP", "AP@0.5", "AP@0.75", "recall", "detections")}
                      for name, pc in coco["per_class"].items()},
        "unseen_classes": sorted(n for n in label_map.values() if n not in known),
        "coco": stats,
    }


def to_label_map_ids(detections: list, label_map: dict[int, str]) -> list:
    """The champion's detections with class ids of the challenger's label map (matched by name);
    a name the challenger's map lacks cannot match any ground truth and is dropped."""
    ids = {name: cid for cid, name in label_map.items()}
    return [dataclasses.replace(d, class_id=ids[d.name]) for d in detections if d.name in ids]
