"""Sample images with their boxes drawn (odpipe.predict.draw_detections, as the evaluation report):
a few per class, the images with the smallest boxes at the input size and the most crowded ones."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from odpipe import storage
from odpipe.data_report.stats import Boxes, Labels
from odpipe.predict import draw_detections
from odpipe.report import jpeg_data_uri


def _spread(items: list[str], k: int) -> list[str]:
    """k items evenly spread over a sorted list (deterministic, not only the first few)."""
    if len(items) <= k:
        return items
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, k).round()]


def pick(labels: Labels, boxes: Boxes, per_class: int = 4, extremes: int = 4) -> list[tuple[str, list[str]]]:
    """[(section title, filenames)]: per class, then the smallest boxes, then the most crowded images."""
    sections = []
    for cls in sorted(set(labels.cls)):
        sections.append((f"class {cls}", _spread(sorted(set(labels.files[labels.cls == cls])), per_class)))
    if len(boxes.input_px):
        seen: list[str] = []
        for i in np.argsort(boxes.input_px, kind="stable"):
            if labels.files[i] not in seen:
                seen.append(str(labels.files[i]))
            if len(seen) == extremes:
                break
        sections.append(("smallest boxes at the input size", seen))
    crowded = sorted(labels.images.items(), key=lambda kv: (-kv[1][2], kv[0]))[:extremes]
    sections.append(("most crowded", [name for name, v in crowded if v[2] > 0]))
    return sections


def thumbnails(images_dir: str, labels: Labels, boxes: Boxes, names: set[str], max_side: int = 240) -> dict[str, dict]:
    """{filename: {"uri", "objects", "smallest"}} with every box of the image drawn in its class colour."""
    colours = {c: i + 1 for i, c in enumerate(sorted(set(labels.cls)))}

    def one(name: str) -> tuple[str, dict]:
        mask = labels.files == name
        gt = [(str(c), tuple(b)) for c, b in zip(labels.cls[mask], labels.boxes[mask])]
        try:
            data = storage.read_bytes(storage.join(str(images_dir), *name.split("/")))
            uri = jpeg_data_uri(draw_detections(data, [], ground_truth=gt, max_side=max_side,
                                                ground_truth_colours=colours))
        except Exception:  # noqa: BLE001 - a bad image is listed by the checks; the report goes on
            uri = ""
        smallest = float(boxes.input_px[mask].min()) if mask.any() else None
        return name, {"uri": uri, "objects": int(mask.sum()), "smallest": smallest}

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pool.map(one, sorted(names)))
