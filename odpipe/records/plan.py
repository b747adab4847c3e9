"""Planning (driver side, pure): labels CSV rows -> one plan item per image -> shards.

An item is {"filename", "width", "height", "source_id", "objects": [{"class", "label", "xmin",
"ymin", "xmax", "ymax", "area", "difficult", "truncated"}]}: rows grouped by `filename`, every
class checked against the label map (an unknown class stops the run before any image is read,
naming class and file), boxes normalised to [0, 1] by the CSV's width/height (the real image
size: the CSV holds pixel coordinates in the stored image's frame), clipped to [0, 1] (counted)
and dropped when empty after clipping (listed in the summary).

`image/source_id` is a decimal string: the first 53 bits of sha256(filename as in the CSV), plus 1
(so 1..2^53, exact in int64, float64 and JSON). It depends on the filename only, so it is stable
across runs and identical for an image in any split, and different images get different ids
across train/eval files written separately (a collision inside one CSV is resolved by probing the
next id in filename order).
"""

from __future__ import annotations

import hashlib
import itertools
import math

from odpipe import storage
from odpipe.errors import UserError
from odpipe.schema import CSV_COLUMNS

TARGET_SHARD_BYTES = 128 * 1024 * 1024
MAX_SHARDS = 1000
_SOURCE_ID_BITS = 53


def source_id_for(filename: str) -> int:
    """Stable numeric id of an image: 1 + first 53 bits of sha256(filename)."""
    digest = hashlib.sha256(filename.encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "big") >> (64 - _SOURCE_ID_BITS)) + 1


def normalise_box(xmin, ymin, xmax, ymax, width, height):
    """Pixel box -> ((xmin, ymin, xmax, ymax) in [0, 1], clipped?) ; (None, True) when empty after clipping."""
    raw = (xmin / width, ymin / height, xmax / width, ymax / height)
    box = tuple(min(1.0, max(0.0, v)) for v in raw)
    if box[2] <= box[0] or box[3] <= box[1]:
        return None, True
    return box, box != raw


def _check_name(name: str, csv_path: str) -> None:
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or "://" in name or (len(name) > 1 and name[1] == ":"):
        raise UserError(
            f"{csv_path}: filename {name!r} must be relative to --images-dir without '..'; fix the CSV "
            "(`odpipe csv` writes such paths)"
        )


def plan_images(frame, label_map: dict[int, str], csv_path: str = "<csv>") -> dict:
    """`plan_rows` over a frame ({column: values}, as `odpipe.schema.read_labels` returns, or a DataFrame)."""
    return plan_rows(zip(*(frame[c] for c in CSV_COLUMNS)), label_map, csv_path)


def plan_rows(rows, label_map: dict[int, str], csv_path: str = "<csv>") -> dict:
    """Group CSV rows (tuples of CSV_COLUMNS values, e.g. streamed by `odpipe.schema.iter_labels`)
    into per-image plans; pure (no I/O).

    Returns {"items": [item, ...] sorted by filename, "dropped": [{"file","class","reason"}],
    "clipped": int, "rows": int}. Raises UserError for a class missing from the label map or
    conflicting image sizes.
    """
    ids = {name: class_id for class_id, name in label_map.items()}
    names = {name: name for name in ids}  # one string object per class, not one per row
    items: dict[str, dict] = {}
    dropped: list[dict] = []
    clipped = rows_seen = 0
    for name, width, height, cls, xmin, ymin, xmax, ymax, difficult, truncated in rows:
        rows_seen += 1
        name = str(name)
        width, height = int(width), int(height)
        _check_name(name, csv_path)
        if width <= 0 or height <= 0:
            raise UserError(f"{csv_path}: {name} has width/height {width}x{height}; regenerate the CSV with `odpipe csv`")
        item = items.get(name)
        if item is None:
            item = items[name] = {"filename": name, "width": width, "height": height, "objects": []}
        elif (item["width"], item["height"]) != (width, height):
            raise UserError(
                f"{csv_path}: {name} is listed as {item['width']}x{item['height']} and as {width}x{height}; "
                "fix the CSV so every row of an image has the same width/height"
            )
        if cls == "":
            continue
        if cls not in ids:
            raise UserError(
                f"{csv_path}: class {cls!r} (image {name}) is not in the label map; "
                "add it with `odpipe labelmap CSV -o MAP --extend MAP` or fix the CSV"
            )
        box, was_clipped = normalise_box(float(xmin), float(ymin), float(xmax), float(ymax), width, height)
        if box is None:
            dropped.append({"file": name, "class": cls, "reason": "box is empty after clipping to the image"})
            continue
        clipped += was_clipped
        x0, y0, x1, y1 = box
        item["objects"].append({
            "class": names[cls], "label": ids[cls], "xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1,
            "area": (x1 - x0) * width * (y1 - y0) * height, "difficult": int(difficult), "truncated": int(truncated),
        })
    ordered = [items[k] for k in sorted(items)]
    used: set[int] = set()
    for item in ordered:
        sid = source_id_for(item["filename"])
        while sid in used:
            sid = sid % (2**_SOURCE_ID_BITS) + 1
        used.add(sid)
        item["source_id"] = sid
    return {"items": ordered, "dropped": dropped, "clipped": clipped, "rows": rows_seen}


def assign_shards(items: list[dict], num_shards: int) -> list[list[dict]]:
    """Round-robin in filename order: every shard holds images from the whole dataset, each in
    filename order."""
    return [list(itertools.islice(items, shard, None, num_shards)) for shard in range(num_shards)]


def plan_path(folder: str, shard: int) -> str:
    return storage.join(folder, f"plan-{shard:05d}.jsonl")


def write_plans(items: list[dict], folder: str, num_shards: int) -> None:
    """The plan as one JSON-lines file per shard (`assign_shards` order), so that shard writers
    (local worker processes, Beam workers) stream their items instead of receiving them."""
    import json

    for shard, chosen in enumerate(assign_shards(items, num_shards)):
        with storage.open_write(plan_path(folder, shard)) as f:
            for item in chosen:
                f.write((json.dumps(item, ensure_ascii=False) + "\n").encode("utf-8"))


def read_plan(path: str):
    """The items of one shard's plan file, one at a time."""
    import json

    with storage.open_read(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def mean_image_bytes(items: list[dict], images_dir: str, sample: int = 32) -> float | None:
    """Mean file size of up to `sample` images spread over the plan (None when none is readable)."""
    if not items:
        return None
    step = max(1, len(items) // sample)
    sizes = []
    for i in range(0, len(items), step):
        try:
            sizes.append(storage.size(storage.join(images_dir, items[i]["filename"])))
        except Exception:  # noqa: BLE001 - a missing image is reported when it is read
            continue
        if len(sizes) >= sample:
            break
    return sum(sizes) / len(sizes) if sizes else None


def default_shards(items: list[dict], images_dir: str, sample: int = 32, mean_bytes: float | None = None) -> int:
    """About 128 MiB per shard (sizes of up to `sample` images), and at least one per 250 images
    up to 16, so that several workers write in parallel (a shard is written by one worker)."""
    if not items:
        return 1
    mean = mean_bytes or mean_image_bytes(items, images_dir, sample) or 200_000
    by_size = math.ceil(mean * len(items) / TARGET_SHARD_BYTES)
    by_count = min(16, math.ceil(len(items) / 250))
    return int(min(MAX_SHARDS, max(1, by_size, by_count)))
