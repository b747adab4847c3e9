"""`odpipe predict`: run an exported detector on images, folders or globs (local or `gs://`).

    odpipe predict --model EXPORT_DIR photos/ more/*.JPG gs://bucket/new/ -o OUTDIR [--voc]

Input is a batched, prefetched tf.data pipeline: file reads run in parallel threads ahead of the
model, so inference never waits on storage. Drawing and writing outputs run in a small thread
pool behind it. Outputs:

    OUTDIR/predictions.json      {"images": [{filename, output, width, height, detections:
                                  [{class, id, score, box: {xmin, ymin, xmax, ymax}}]}],
                                  "unreadable": [{file, reason}], ...}; boxes in pixels of the
                                  stored image (EXIF orientation not applied, as the model sees it)
    OUTDIR/images/<name>.jpg     each image drawn with its detections
    OUTDIR/annotations/<name>.xml  with --voc: one labelImg (Pascal VOC) file per image, so the
                                  predictions can be corrected in labelImg and fed back to
                                  `odpipe csv --images-dir <input folder>` as new training data

Each image goes through the records stage's check first (`odpipe.records.images.prepare_image`,
structure walk), so predict reads what `odpipe tfrecord` writes: a JPEG that only lacks its end is
repaired, TIFF/BMP/CMYK JPEG... converted (the prediction says so under "image"), a corrupt one is
listed under "unreadable" with the records stage's reason.

<name> keeps the image's path relative to the folder it was found in (files named directly or by
a glob: the base name); a clash gets a `_1`, `_2` suffix. An image that cannot be read is counted
and listed under "unreadable", never a crash; no input matching at all is a UserError.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import posixpath
import sys
import threading
from collections import Counter

from odpipe import storage
from odpipe.annotations import IMAGE_EXTENSIONS
from odpipe.detector import image_info
from odpipe.errors import UserError, first_line
from odpipe.progress import progress_bar
from odpipe.records.images import Rejected, prepare_image

# Imported inside functions: TensorFlow and Pillow (seconds) only when images are predicted or drawn.

PALETTE = [
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40), (128, 0, 0),
]


def class_colour(class_id: int) -> tuple[int, int, int]:
    return PALETTE[(int(class_id) - 1) % len(PALETTE)]


def expand_inputs(inputs) -> list[tuple[str, str]]:
    """[(path, name)] for image files, folders (recursive) and globs, local or `gs://`.

    `name` is the output name: the path relative to the folder it was found in, or the base
    name for a file or glob match; unique over the run. A path that exists is that file or folder,
    whatever characters it holds (`photo[1].jpg` is that file, never a pattern); only an input
    that does not exist is read as a glob. Folders and globs keep only image extensions
    (case-insensitive: .jpg .jpeg .png .bmp .gif .webp .tif .tiff); a file named directly is kept
    whatever its extension. A path that does not exist, or nothing matched at all, is a UserError."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found: list[tuple[str, str]] = []
    for raw in inputs:
        item = str(raw)
        try:
            kind, matches = storage.find(item, suffixes=IMAGE_EXTENSIONS)
        except OSError as err:
            raise UserError(
                f"{err.filename or item}: cannot read it ({err.strerror or first_line(err)}); fix its permissions or leave it out"
            ) from None
        if kind == "missing" and storage.has_glob(item):
            print(f"odpipe predict: warning: {item} matched no image", file=sys.stderr)
        elif kind == "missing":
            raise UserError(f"{item}: no such file or folder; check the path")
        elif kind == "folder" and not matches:
            print(f"odpipe predict: warning: folder {item} holds no image", file=sys.stderr)
        found += matches
    seen_paths: set[str] = set()
    used: set[str] = set()
    result = []
    for path, name in found:
        if path in seen_paths:
            continue
        seen_paths.add(path)
        stem, _ = posixpath.splitext(name)
        unique, n = stem, 0
        while unique.lower() in used:
            n += 1
            unique = f"{stem}_{n}"
        used.add(unique.lower())
        result.append((path, unique))
    if not result:
        raise UserError(
            f"no image matched {' '.join(map(str, inputs))}; give image files, folders or globs "
            f"(extensions {' '.join(IMAGE_EXTENSIONS)}, any case)"
        )
    return result


def _read_or_reason(path) -> tuple[bytes, bytes]:
    path = path.decode("utf-8") if isinstance(path, bytes) else str(path)
    try:
        return storage.read_bytes(path), b""
    except Exception as err:  # noqa: BLE001 - any read failure is reported per file, not a crash
        return b"", f"cannot read the file ({type(err).__name__}: {first_line(err)})".encode()


def read_batches(paths: list[str], batch_size: int):
    """Yield lists of (bytes, error) for `paths` in order, read ahead by a tf.data pipeline
    (parallel reads through odpipe.storage, batched, prefetched)."""
    import tensorflow as tf

    def read(path):
        data, err = tf.numpy_function(_read_or_reason, [path], [tf.string, tf.string], stateful=False)
        data.set_shape([])
        err.set_shape([])
        return data, err

    ds = tf.data.Dataset.from_tensor_slices(tf.constant(paths, dtype=tf.string))
    ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size).prefetch(2)
    for data, err in ds.as_numpy_iterator():
        yield [(bytes(d), e.decode("utf-8", "replace")) for d, e in zip(data, err)]


def draw_detections(data: bytes, detections, ground_truth=None, max_side: int | None = None,
                    ground_truth_colours: dict[str, int] | None = None):
    """A PIL RGB image of the encoded `data` with boxes drawn: detections in class colours with
    "name score" labels; optional ground truth [(name, (xmin, ymin, xmax, ymax))] in white/black
    dashes, or, with `ground_truth_colours` ({name: class id}), in class colours with name labels
    (the data report). `max_side` shrinks the result (boxes scaled with it)."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.open(io.BytesIO(data))
    stored_width = image.width
    if max_side and image.format == "JPEG":
        image.draft("RGB", (max_side, max_side))  # decode at reduced size: much faster
    image = image.convert("RGB")
    if max_side and max(image.size) > max_side:
        factor = max_side / max(image.size)
        image = image.resize((max(1, round(image.width * factor)), max(1, round(image.height * factor))))
    scale = image.width / float(stored_width)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    line = max(2, round(max(image.size) / 250))

    def sbox(box):
        return [v * scale for v in box]

    def labelled(box, colour, label):
        x0, y0, x1, y1 = sbox(box)
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=line)
        tx0, ty0, tx1, ty1 = draw.textbbox((x0, y0), label, font=font)
        ty = y0 - (ty1 - ty0) - 2 if y0 - (ty1 - ty0) - 2 >= 0 else y0
        draw.rectangle([x0, ty, x0 + (tx1 - tx0) + 4, ty + (ty1 - ty0) + 2], fill=colour)
        draw.text((x0 + 2, ty), label, fill=(255, 255, 255), font=font)

    for name, box in ground_truth or []:
        if ground_truth_colours is not None:
            labelled(box, class_colour(ground_truth_colours.get(name, 1)), name)
            continue
        x0, y0, x1, y1 = sbox(box)
        draw.rectangle([x0, y0, x1, y1], outline=(0, 0, 0), width=line + 2)
        draw.rectangle([x0, y0, x1, y1], outline=(255, 255, 255), width=line)
    for det in detections:
        labelled(det.box, class_colour(det.class_id), f"{det.name} {det.score:.2f}")
    return image


def voc_objects(detections, width: int, height: int) -> tuple[list, int]:
    """labelImg objects [(name, (xmin, ymin, xmax, ymax))] from pixel detections, the way labelImg
    saves a box (integer pixels, xmin/ymin at least 1, inside the image); returns them and how
    many were too small to keep (under one pixel wide or high after rounding)."""
    objects, dropped = [], 0
    for det in detections:
        x0, y0, x1, y1 = det.box
        xmin, ymin = max(1, int(round(x0))), max(1, int(round(y0)))
        xmax, ymax = min(width, int(round(x1))), min(height, int(round(y1)))
        if xmax <= xmin or ymax <= ymin:
            dropped += 1
            continue
        objects.append((det.name, (xmin, ymin, xmax, ymax)))
    return objects, dropped


def write_atomic(path: str, text: str) -> None:
    """Write a text file that a reader (labelImg, a re-run, a retried Beam bundle) sees whole or not
    at all: locally a temporary file beside it renamed over it; a Cloud Storage object appears
    whole on upload. (Unlike storage.replace_text it does not list the folder: cheap for 100k files.)"""
    if storage.is_remote(path):
        storage.write_text(path, text)
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(temp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def _write_outputs(output_dir, path, name, data, width, height, depth, detections, voc, draw) -> int:
    """Drawn image and VOC XML for one image; returns the count of boxes too small for VOC."""
    dropped = 0
    if draw:
        buf = io.BytesIO()
        draw_detections(data, detections).save(buf, format="JPEG", quality=90)
        storage.write_bytes(storage.join(output_dir, "images", *f"{name}.jpg".split("/")), buf.getvalue())
    if voc:
        from odpipe.sample_data import voc_xml

        objects, dropped = voc_objects(detections, width, height)
        parent, base = storage.split(path)
        filename = name.rsplit("/", 1)[0] + "/" + base if "/" in name else base
        folder = "" if parent == "." else storage.basename(parent)
        xml = voc_xml(filename, folder, path, width, height, depth, objects)
        write_atomic(storage.join(output_dir, "annotations", *f"{name}.xml".split("/")), xml)
    return dropped


def _prepare(data: bytes):
    """(bytes for the model, (width, height, depth), what was done or None) for one read image, by
    the records stage's rule (`odpipe.records.images.prepare_image`, structure walk): a JPEG that only
    lacks its end is repaired, TIFF/BMP/CMYK... converted; or (None, reason) for an image it rejects."""
    info = image_info(data)
    if info is None:
        return None, "not an image (unknown format or corrupt header)"
    try:
        prepared = prepare_image(data, verify="structure")
    except Rejected as err:
        return None, str(err)
    note = f"repaired: {prepared.repaired}" if prepared.repaired else (
        f"converted: {prepared.conversion}" if prepared.conversion else None)
    return prepared.data, info, note


def predict(
    model,
    inputs,
    output_dir: str,
    threshold: float = 0.5,
    voc: bool = False,
    batch_size: int = 8,
    draw: bool = True,
    progress: bool = True,
) -> dict:
    """Run the exported model at `model` (an export dir or an odpipe.detector.Detector) on
    `inputs` (image files, folders, globs; local or gs://) and write OUTDIR outputs.

    Returns the summary: {"images", "detections", "classes", "unreadable": [{file, reason}],
    "voc_boxes_dropped", "predictions"}."""
    from odpipe.detector import Detector

    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"--threshold {threshold}: must be between 0 and 1")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1")
    items = expand_inputs(inputs)
    storage.make_writable_dir(output_dir)  # before loading the model: a bad -o fails at once
    detector = model if isinstance(model, Detector) else Detector(model)
    records: list[dict] = []
    unreadable: list[dict] = []
    pending: list[concurrent.futures.Future] = []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2) if (draw or voc) else None
    bar = progress_bar(len(items), "predict", "img", progress)
    try:
        paths = [p for p, _ in items]
        start = 0
        for batch in read_batches(paths, batch_size):
            batch_items = items[start : start + len(batch)]
            start += len(batch)
            good = []
            for (path, name), (data, err) in zip(batch_items, batch):
                item = (None, err) if err else _prepare(data)
                if item[0] is None:
                    unreadable.append({"file": path, "reason": item[1]})
                else:
                    good.append((path, name, *item))
            results = detector.detect_bytes([g[2] for g in good])
            for (path, name, data, (width, height, depth), note), raw in zip(good, results):
                if isinstance(raw, str):
                    unreadable.append({"file": path, "reason": f"the model cannot decode it: {raw}"})
                    continue
                dets = detector.to_detections(raw, width, height, threshold)
                records.append({
                    "filename": path, "output": name, "width": width, "height": height,
                    "detections": [d.as_dict() for d in dets], **({"image": note} if note else {}),
                })
                if pool is not None:
                    pending.append(pool.submit(_write_outputs, output_dir, path, name, data, width, height, depth, dets, voc, draw))
            bar.update(len(batch))
            if len(pending) > 4 * batch_size:  # bound memory: wait for the oldest writers
                for future in pending[: len(pending) - 2 * batch_size]:
                    future.result()  # also re-raises a writer's error early
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True)
        if detector is not model:
            detector.close()
    voc_dropped = sum(f.result() for f in pending)
    return write_predictions(output_dir, str(getattr(detector, "export_dir", model)), threshold, voc, len(items),
                             records, unreadable, voc_dropped)


def write_predictions(output_dir: str, model: str, threshold: float, voc: bool, images_found: int,
                      records: list[dict], unreadable: list[dict], voc_dropped: int) -> dict:
    """Write OUTDIR/predictions.json (atomically: a reader sees the whole file or none) and return
    the summary; shared by the in-process and the Beam run (odpipe.predict_beam)."""
    classes = Counter(d["class"] for r in records for d in r["detections"])
    summary = {
        "model": model,
        "threshold": threshold,
        "images": len(records),
        "detections": sum(len(r["detections"]) for r in records),
        "classes": dict(sorted(classes.items())),
        "unreadable": unreadable,
        "prepared": [{"file": r["filename"], "image": r["image"]} for r in records if "image" in r],
        "voc_boxes_dropped": voc_dropped,
        "predictions": storage.join(output_dir, "predictions.json"),
    }
    doc = {k: summary[k] for k in ("model", "threshold", "images", "detections", "classes")}
    doc["images_found"] = images_found
    doc["unreadable"] = unreadable
    if voc:
        doc["voc_boxes_dropped"] = voc_dropped
    doc["predictions"] = records
    storage.replace_text(summary["predictions"], json.dumps(doc, indent=1) + "\n")
    return summary
