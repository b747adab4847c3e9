"""Labels CSV + images -> sharded TFRecords of `tf.train.Example`, with Apache Beam.

    odpipe tfrecord train.csv --images-dir images/ --label-map label_map.pbtxt -o records/train

writes `records/train-00000-of-0000N.tfrecord` (glob `records/train-*.tfrecord`) and, last,
`records/train.summary.json`. Paths may be local or `gs://`. Locally it runs on Beam's
DirectRunner on every core: in one process whose threads prepare the images, or, for jobs large
enough to repay their start-up, one worker process per core (`direct_running_mode`;
`--direct_running_mode`/`--direct_num_workers` choose explicitly); `--runner DataflowRunner --project P --region R
--temp_location gs://B/tmp --sdk_container_image IMAGE` runs it on Dataflow (other Beam flags go
last, after `--beam-options`).

How it runs
  1. The driver reads the CSV (`read_labels_csv`) and the label map, and plans every image
     (`plan_images`, a pure function): rows grouped by `filename`, every class checked against the
     label map (an unknown class stops the run before Beam starts, naming class and file), boxes
     normalised to [0, 1] by the CSV's width/height (the real image size: the CSV holds pixel
     coordinates in the stored image's frame), clipped to [0, 1] (counted) and dropped when empty
     after clipping (listed in the summary). The plan is written to a temporary folder as one
     JSON-lines file per shard (`write_plan`: round-robin in filename order).
  2. Beam (`ShardIds | WriteShards`): only shard ids go through Beam; each shard is written by one
     worker, which streams its plan file image by image, so memory stays flat however large the
     dataset. Per image it reads the bytes through Beam's file systems, checks and if needed
     converts them (`prepare_image`) and builds the record (`image_to_example`, pure), on a few
     threads at most a small window ahead of the writer (reads, decoding and hashing release the
     GIL; gs:// latency overlaps). Rejected images go to a side output with their reason.
  3. Shards are written under the temporary folder, then renamed into place (old shards of the same
     prefix removed first); the summary is written last, so a run that dies never leaves a set of
     shards with a summary beside it.

Images
  Every record must decode with Model Garden's `TfExampleDecoder` (`tf.io.decode_image(...,
  channels=3)`) at the size it claims. Kept byte-for-byte: JPEG in L/RGB (grayscale, progressive,
  camera MPO) and PNG in 1/L/RGB/P-without-transparency. Each is walked to its end (JPEG marker
  segments and scan data up to the end-of-image marker, PNG chunk CRCs up to IEND: truncation and
  garbage bytes, which TF's decoder rejects, are caught) and, with the default `--verify pixels`,
  its pixel data is entropy-decoded once (JPEG at 1/8 scale, which still reads every coefficient),
  proving it decodes at its size. `--verify structure` skips the decode (several times faster).
  Converted: CMYK/YCCK JPEG -> RGB JPEG (quality 95, Adobe inversion handled by Pillow);
  RGBA/LA/transparent-palette images -> flattened over white -> PNG; 16-bit PNG -> 8-bit PNG;
  BMP/GIF/WebP/TIFF -> PNG (first frame; TF decodes GIF/WebP as 4-D animations). Rejected with a
  reason: missing, unreadable (not an image), corrupt/truncated, too large, size mismatch (the
  file's size differs from the CSV's width/height on an image with boxes).
  EXIF orientation is ignored: the stored pixels are kept, because that is what TensorFlow decodes
  and what labelImg shows and annotates (it loads with Qt's QImage.fromData, which does not apply
  the orientation tag: labelImg issues #198, #342, #395 report portrait photos shown sideways);
  images carrying a rotating orientation tag are counted (`exif_orientation_ignored`).

Record keys (TF Object Detection API and Model Garden): image/encoded, image/format ('jpeg' or
'png', the real format), image/height, image/width, image/filename, image/source_id,
image/key/sha256, image/object/bbox/{xmin,ymin,xmax,ymax} (normalised), image/object/class/text,
image/object/class/label, image/object/area (pixels), image/object/is_crowd,
image/object/difficult, image/object/truncated. Images without objects have empty lists.

`image/source_id` is a decimal string: the first 53 bits of sha256(filename as in the CSV), plus 1
(so 1..2^53, exact in int64, float64 and JSON). It depends on the filename only, so it is stable
across runs and identical for an image in any split, and different images get different ids
across train/eval files written separately (a collision inside one CSV is resolved by probing the
next id in filename order).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import itertools
import json
import math
import os
import posixpath
import re
import struct
import sys
import time
import uuid
import zlib
from collections import Counter

import apache_beam as beam

from odpipe import storage
from odpipe.errors import UserError, first_line

COUNTER_NAMESPACE = "odpipe.records"
SHARD_TEMPLATE = "-SSSSS-of-NNNNN"
SUFFIX = ".tfrecord"
TARGET_SHARD_BYTES = 128 * 1024 * 1024
MAX_SHARDS = 1000
_SOURCE_ID_BITS = 53


# ----------------------------------------------------------------------------- planning (driver)


def source_id_for(filename: str) -> int:
    """Stable numeric id of an image: 1 + first 53 bits of sha256(filename)."""
    digest = hashlib.sha256(filename.encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "big") >> (64 - _SOURCE_ID_BITS)) + 1


def normalise_box(xmin, ymin, xmax, ymax, width, height):
    """Pixel box -> ((xmin, ymin, xmax, ymax) in [0, 1], clipped?) ; None when empty after clipping."""
    raw = (xmin / width, ymin / height, xmax / width, ymax / height)
    box = tuple(min(1.0, max(0.0, v)) for v in raw)
    if box[2] <= box[0] or box[3] <= box[1]:
        return None, True
    return box, box != raw


def plan_images(frame, label_map: dict[int, str], csv_path: str = "<csv>") -> dict:
    """Group CSV rows into per-image plans; pure (no I/O).

    Returns {"items": [item, ...] sorted by filename, "dropped": [{"file","class","reason"}],
    "clipped": int, "rows": int}. An item is {"filename","width","height","source_id","objects":
    [{"class","label","xmin","ymin","xmax","ymax","area","difficult","truncated"}]}.
    Raises UserError for a class missing from the label map or conflicting image sizes.
    """
    ids = {name: class_id for class_id, name in label_map.items()}
    items: dict[str, dict] = {}
    dropped: list[dict] = []
    clipped = 0
    from odpipe.annotations import CSV_COLUMNS

    for name, width, height, cls, xmin, ymin, xmax, ymax, difficult, truncated in zip(*(frame[c] for c in CSV_COLUMNS)):
        name = str(name)
        width, height = int(width), int(height)
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ".." in parts or "://" in name or (len(name) > 1 and name[1] == ":"):
            raise UserError(
                f"{csv_path}: filename {name!r} must be relative to --images-dir without '..'; fix the CSV "
                "(`odpipe csv` writes such paths)"
            )
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
        item["objects"].append(
            {
                "class": cls,
                "label": ids[cls],
                "xmin": x0,
                "ymin": y0,
                "xmax": x1,
                "ymax": y1,
                "area": (x1 - x0) * width * (y1 - y0) * height,
                "difficult": int(difficult),
                "truncated": int(truncated),
            }
        )
    ordered = [items[k] for k in sorted(items)]
    used: set[int] = set()
    for item in ordered:
        sid = source_id_for(item["filename"])
        while sid in used:
            sid = sid % (2**_SOURCE_ID_BITS) + 1
        used.add(sid)
        item["source_id"] = sid
    return {"items": ordered, "dropped": dropped, "clipped": clipped, "rows": len(frame)}


# ----------------------------------------------------------------------------- per image (pure)


class Rejected(Exception):
    """An image that cannot be written; `key` is the counter name, the message the reason."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


_KEEP_JPEG_MODES = {"L", "RGB"}
_KEEP_PNG_MODES = {"1", "L", "RGB", "P"}


def _flatten(img):
    """RGB (or L) image with any transparency composited over white."""
    from PIL import Image

    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        import numpy as np

        arr = np.asarray(img)
        if arr.dtype != np.uint16 and arr.max(initial=0) > 255:
            arr = np.clip(arr, 0, 65535)
        arr = (arr.astype(np.uint32) >> 8) if arr.max(initial=0) > 255 else arr
        return Image.fromarray(arr.astype(np.uint8), "L")
    if img.mode in ("L", "RGB"):
        return img
    return img.convert("RGB")


def _encode(img, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.save(buf, "JPEG", quality=95)
    else:
        img.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


VERIFY_MODES = ("pixels", "structure")
_VERIFY_ALIASES = {"header": "structure"}  # the name of "structure" before it walked the whole file

# After a JPEG's first SOS, a 0xFF byte followed by anything but 0x00 (stuffing), RST0-7 or 0xFF (fill)
# is a marker; these are the ones a (progressive) JPEG may carry between scans and before EOI.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_BETWEEN_SCANS = {0xC4, 0xCC, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD, 0xFE, *range(0xE0, 0xF0)}


def _jpeg_structure_problem(data: bytes) -> str | None:
    """Walk a JPEG's marker segments and entropy-coded data to EOI; the problem found, or None.

    Catches truncation (no EOI) and data that TF's decoder rejects as an unsupported marker
    inside the scan (garbage bytes); not bit flips that still decode (TF decodes those too).
    """
    pos, size, scans = 2, len(data), 0
    while pos < size:
        if data[pos] != 0xFF:  # stray bytes between segments: libjpeg skips them (with a warning), so do we
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
        while pos < size and data[pos] == 0xFF:
            pos += 1
        if pos >= size:
            break
        marker = data[pos]
        pos += 1
        if scans and marker not in _JPEG_BETWEEN_SCANS:
            return f"invalid marker 0x{marker:02x} inside the image data at byte {pos - 2}"
        if marker == 0xD9:
            return None if scans else "end-of-image marker before any image data"
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            continue
        if pos + 2 > size:
            break
        pos += int.from_bytes(data[pos:pos + 2], "big")
        if marker == 0xDA:
            scans += 1
            found = _JPEG_MARKER.search(data, pos)
            if found is None:
                break
            pos = found.start()
    return "truncated JPEG file (no end-of-image marker)"


def _png_structure_problem(data: bytes) -> str | None:
    """Walk a PNG's chunks checking every CRC up to IEND; the problem found, or None."""
    pos, size = 8, len(data)
    while pos + 12 <= size:
        length = int.from_bytes(data[pos:pos + 4], "big")
        end = pos + 8 + length
        if end + 4 > size:
            break
        if zlib.crc32(data[pos + 4:end]) != int.from_bytes(data[end:end + 4], "big"):
            return f"corrupt PNG chunk {data[pos + 4:pos + 8].decode('latin-1')!r} (CRC mismatch at byte {pos})"
        if data[pos + 4:pos + 8] == b"IEND":
            return None
        pos = end + 4
    return "truncated PNG file (no IEND chunk)"


def _prepare(data: bytes, verify: str):
    """prepare_image + whether a kept JPEG carries a rotating EXIF orientation (one parse)."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        fmt = img.format
        width, height = img.size
    except UnidentifiedImageError:
        raise Rejected("unreadable", "not an image file Pillow or TensorFlow can read") from None
    except Image.DecompressionBombError as err:
        raise Rejected("too_large", f"image too large to decode safely ({err})") from None
    except Exception as err:  # noqa: BLE001 - any parse failure of a header is a corrupt file
        raise Rejected("corrupt", f"corrupt image header ({type(err).__name__}: {err})") from None
    try:
        keep_jpeg = fmt in ("JPEG", "MPO") and img.mode in _KEEP_JPEG_MODES
        keep_png = fmt == "PNG" and img.mode in _KEEP_PNG_MODES and "transparency" not in img.info
        if keep_jpeg or keep_png:
            problem = (_jpeg_structure_problem if keep_jpeg else _png_structure_problem)(data)
            if problem:
                raise Rejected("corrupt", problem)
            if verify == "pixels":
                if keep_jpeg:  # DCT-scaled: every coefficient is still entropy-decoded, the IDCT is skipped
                    img.draft(img.mode, (max(1, width // 8), max(1, height // 8)))
                img.load()
            rotated = keep_jpeg and "exif" in img.info and _orientation(img) not in (1, None)
            return data, ("jpeg" if keep_jpeg else "png"), width, height, None, rotated
        img.seek(0)
        img.load()
        if fmt in ("JPEG", "MPO"):
            converted = _encode(img.convert("RGB"), "jpeg"), "jpeg", width, height, f"jpeg_{img.mode.lower()}_to_rgb"
            return (*converted, False)
        flat = _flatten(img)
        return _encode(flat, "png"), "png", width, height, f"{str(fmt).lower()}_{img.mode.lower()}_to_png", False
    except Rejected:
        raise
    except Image.DecompressionBombError as err:
        raise Rejected("too_large", f"image too large to decode safely ({err})") from None
    except Exception as err:  # noqa: BLE001 - Pillow raises OSError/SyntaxError/ValueError for bad data
        raise Rejected("corrupt", f"corrupt or truncated {fmt} data ({type(err).__name__}: {err})") from None


def _orientation(img):
    try:
        return img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - EXIF is informative only
        return None


def prepare_image(data: bytes, verify: str = "pixels") -> tuple[bytes, str, int, int, str | None]:
    """Check (and if needed convert) encoded image bytes for TF's decoder.

    Kept JPEG/PNG files are always walked to their end: JPEG marker segments and the scan data up
    to the end-of-image marker (an invalid marker inside the data is what TF's decoder rejects),
    PNG chunks with their CRCs up to IEND. verify="pixels" (default) also decodes the pixel data
    (JPEG at 1/8 scale, which still entropy-decodes every coefficient), proving the file decodes
    at its size; "structure" stops after the walk (several times cheaper; catches truncation and
    garbage data, not damage that only a decoder notices). Converted images are always fully decoded.
    Returns (bytes, format 'jpeg'|'png', width, height, conversion or None); raises Rejected.
    """
    return _prepare(data, _VERIFY_ALIASES.get(verify, verify))[:5]


# tf.train.Example wire format, written directly so Beam workers need no TensorFlow.
_SMALL_VARINTS = [bytes((i,)) for i in range(128)]


def _varint(value: int) -> bytes:
    if 0 <= value < 128:
        return _SMALL_VARINTS[value]
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_LEN_TAGS = {n: bytes(((n << 3) | 2,)) for n in (1, 2, 3)}  # length-delimited field tags 1-3


def _field(number: int, payload: bytes) -> bytes:
    size = len(payload)
    return _LEN_TAGS[number] + (_SMALL_VARINTS[size] if size < 128 else _varint(size)) + payload


def _feature(values) -> bytes:
    kind, vals = values
    if kind == "bytes":
        return _field(1, b"".join([_field(1, v) for v in vals]))
    if not vals:
        return _field(2 if kind == "float" else 3, b"")
    if kind == "float":
        return _field(2, _field(1, struct.pack(f"<{len(vals)}f", *vals)))
    ints = [int(v) for v in vals]
    packed = bytes(ints) if min(ints) >= 0 and max(ints) < 128 else b"".join([_varint(v) for v in ints])
    return _field(3, _field(1, packed))


@functools.lru_cache(maxsize=256)
def _key_field(key: str) -> bytes:
    return _field(1, key.encode("utf-8"))


def _header(number: int, length: int) -> bytes:
    return _varint((number << 3) | 2) + _varint(length)


_INLINE_BYTES = 1024


def encode_example(features: dict[str, tuple[str, list]]) -> bytes:
    """Serialized `tf.train.Example` from {key: ("bytes"|"float"|"int64", [values])}.

    Keys in sorted order (as TF's deterministic serialization). A large single bytes value (the
    image) is copied once, into the result: its enclosing headers are computed from its length.
    """
    pieces, total = [], 0
    for key in sorted(features):
        kind, vals = features[key]
        if kind == "bytes" and len(vals) == 1 and len(vals[0]) >= _INLINE_BYTES:
            value = vals[0]
            h_list = _header(1, len(value))  # BytesList.value
            n_list = len(h_list) + len(value)
            h_feature = _header(1, n_list)  # Feature.bytes_list
            n_feature = len(h_feature) + n_list
            head = _key_field(key) + _header(2, n_feature) + h_feature + h_list  # map entry: key, value
            entry_len = len(head) + len(value)
            head = _header(1, entry_len) + head  # Features.feature entry
            pieces += (head, value)
            total += len(head) + len(value)
        else:
            entry = _field(1, _key_field(key) + _field(2, _feature(features[key])))
            pieces.append(entry)
            total += len(entry)
    return b"".join([_header(1, total), *pieces])


def image_to_example(item: dict, data: bytes, verify: str = "pixels") -> tuple[bytes, dict]:
    """One planned image + its file bytes -> (serialized Example, info); raises Rejected.

    info: {"objects": int, "conversion": str|None, "exif_rotated": bool, "bytes": int}.
    """
    encoded, fmt, width, height, conversion, rotated = _prepare(data, _VERIFY_ALIASES.get(verify, verify))
    objects = item["objects"]
    if (width, height) != (item["width"], item["height"]):
        if objects:
            raise Rejected(
                "size_mismatch",
                f"image is {width}x{height} pixels but the CSV says {item['width']}x{item['height']}; "
                "regenerate the CSV with `odpipe csv --images-dir` from these images",
            )
    features = {
        "image/encoded": ("bytes", [encoded]),
        "image/format": ("bytes", [fmt.encode()]),
        "image/height": ("int64", [height]),
        "image/width": ("int64", [width]),
        "image/filename": ("bytes", [item["filename"].encode("utf-8")]),
        "image/source_id": ("bytes", [str(item["source_id"]).encode()]),
        "image/key/sha256": ("bytes", [hashlib.sha256(encoded).hexdigest().encode()]),
        "image/object/bbox/xmin": ("float", [o["xmin"] for o in objects]),
        "image/object/bbox/ymin": ("float", [o["ymin"] for o in objects]),
        "image/object/bbox/xmax": ("float", [o["xmax"] for o in objects]),
        "image/object/bbox/ymax": ("float", [o["ymax"] for o in objects]),
        "image/object/class/text": ("bytes", [o["class"].encode("utf-8") for o in objects]),
        "image/object/class/label": ("int64", [o["label"] for o in objects]),
        "image/object/area": ("float", [o["area"] for o in objects]),
        "image/object/is_crowd": ("int64", [0] * len(objects)),
        "image/object/difficult": ("int64", [o["difficult"] for o in objects]),
        "image/object/truncated": ("int64", [o["truncated"] for o in objects]),
    }
    info = {
        "objects": len(objects),
        "conversion": conversion,
        "exif_rotated": rotated,
        "bytes": len(encoded),
    }
    return encode_example(features), info


# ----------------------------------------------------------------------------- Beam transforms

REJECTED_TAG = "rejected"


def shard_path(prefix: str, shard: int, num_shards: int) -> str:
    return f"{prefix}-{shard:05d}-of-{num_shards:05d}{SUFFIX}"


def _read_threads() -> int:
    """Threads preparing images inside one worker: reads, JPEG decoding and hashing release the GIL,
    so they use every core even in one process (and overlap the latency of gs:// reads)."""
    return min(16, (os.cpu_count() or 1) + 2)


class _WriteShardFn(beam.DoFn):
    """Shard id -> one TFRecord shard written image by image, in filename order (flat memory).

    The shard's plan entries are streamed from its plan file (`plan_path(plan_prefix, shard)`);
    an element may also be (shard, items) with the entries themselves.

    Images are read and prepared by a few threads, at most `2 x threads` ahead of the writer, so
    memory stays flat; counters are updated by the writer (Beam's metrics context is per thread).
    Main output: {"path", "images", "objects"} per shard; `rejected` output: {"file", "reason"}.
    Rewriting a shard on a retried bundle overwrites the same file, so retries are idempotent.
    """

    def __init__(self, images_dir: str, prefix: str, num_shards: int, verify: str = "pixels",
                 threads: int | None = None, plan_prefix: str | None = None):
        self._images_dir = images_dir
        self._plan_prefix = plan_prefix
        self._verify = verify
        self._prefix = prefix
        self._num_shards = num_shards
        self._threads = threads
        m = beam.metrics.Metrics
        self._images = m.counter(COUNTER_NAMESPACE, "images_written")
        self._objects = m.counter(COUNTER_NAMESPACE, "objects_written")
        self._bytes = m.counter(COUNTER_NAMESPACE, "bytes_written")
        self._exif = m.counter(COUNTER_NAMESPACE, "exif_orientation_ignored")
        self._busy = m.counter(COUNTER_NAMESPACE, "shard_write_ms")

    def _example(self, item):
        path = storage.join(self._images_dir, item["filename"])
        try:
            data = storage.read_bytes(path)
        except (FileNotFoundError, IsADirectoryError):
            raise Rejected("missing", f"image file not found at {path}") from None
        except OSError as err:
            if storage.is_remote(path):
                raise  # a bucket error may be transient: the runner retries the shard
            raise Rejected("unreadable", f"cannot read the image file {path} ({type(err).__name__}: {first_line(err)})") from None
        return image_to_example(item, data, self._verify)

    def _prepared(self, items):
        """(item, (serialized, info) or Rejected) in order, prepared by a bounded thread pool."""
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        # Threads pay where GIL-free work dominates: JPEG decoding (verify pixels) or waiting on gs://.
        # A local structure-only check is mostly Python: two threads (measured, 10k photos) still
        # overlap disk reads (-25% time from a cold cache) at a small cost from a warm one (+12%).
        remote = storage.is_remote(self._images_dir)
        threads = self._threads or (_read_threads() if self._verify == "pixels" or remote else 2)
        if threads <= 1:
            for item in items:
                try:
                    yield item, self._example(item)
                except Rejected as rej:
                    yield item, rej
            return
        pending = iter(items)
        with ThreadPoolExecutor(threads, thread_name_prefix="odpipe-records") as pool:
            window = deque((item, pool.submit(self._example, item)) for item in itertools.islice(pending, 2 * threads))
            try:
                while window:
                    item, future = window.popleft()
                    following = next(pending, None)
                    if following is not None:
                        window.append((following, pool.submit(self._example, following)))
                    try:
                        yield item, future.result()
                    except Rejected as rej:
                        yield item, rej
            finally:
                for _, future in window:
                    future.cancel()

    def process(self, element):
        from apache_beam.io.tfrecordio import _TFRecordUtil

        crc = _TFRecordUtil._masked_crc32c  # noqa: SLF001 - Beam's TFRecord framing, as WriteToTFRecord uses
        if isinstance(element, tuple):
            shard, items = element
            items = sorted(items, key=lambda it: it["filename"])
        else:
            shard, items = element, _read_plan(plan_path(self._plan_prefix, element))
        path = shard_path(self._prefix, shard, self._num_shards)
        images = objects = size = exif = 0
        conversions: Counter = Counter()
        started = time.perf_counter()
        with storage.open_write(path) as out:
            for item, result in self._prepared(items):
                if isinstance(result, Rejected):
                    beam.metrics.Metrics.counter(COUNTER_NAMESPACE, f"rejected_{result.key}").inc()
                    yield beam.pvalue.TaggedOutput(REJECTED_TAG, {"file": item["filename"], "reason": str(result)})
                    continue
                serialized, info = result
                length = struct.pack("<Q", len(serialized))  # TFRecord framing, the record itself not copied
                out.write(length + struct.pack("<I", crc(length)))
                out.write(serialized)
                out.write(struct.pack("<I", crc(serialized)))
                images += 1
                objects += info["objects"]
                size += info["bytes"]
                exif += info["exif_rotated"]
                if info["conversion"]:
                    conversions[info["conversion"]] += 1
        # counted once per shard (the shard is rewritten whole on a retry)
        self._images.inc(images)
        self._objects.inc(objects)
        self._bytes.inc(size)
        if exif:
            self._exif.inc(exif)
        for conversion, count in conversions.items():
            beam.metrics.Metrics.counter(COUNTER_NAMESPACE, f"converted_{conversion}").inc(count)
        self._busy.inc(int((time.perf_counter() - started) * 1000))
        yield {"path": path, "images": images, "objects": objects}


def plan_path(plan_prefix: str, shard: int) -> str:
    return f"{plan_prefix}-{shard:05d}.jsonl"


def _read_plan(path: str):
    """Plan entries of one shard, one JSON line at a time."""
    with storage.open_read(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def write_plan(items: list[dict], plan_prefix: str, num_shards: int) -> None:
    """Plan entries -> one JSON-lines file per shard (round-robin in filename order, so every shard
    has images from the whole dataset and each file is in filename order)."""
    for shard in range(num_shards):
        with storage.open_write(plan_path(plan_prefix, shard)) as f:
            for item in itertools.islice(items, shard, None, num_shards):
                f.write((json.dumps(item, ensure_ascii=False) + "\n").encode("utf-8"))


@beam.ptransform_fn
def ShardIds(pbegin, num_shards: int):  # noqa: N802 - Beam transform naming
    """0..num_shards-1, spread over the workers (Reshuffle: one shard per work item); only these
    small ids go through Beam, never plan entries or image bytes."""
    return pbegin | "Create" >> beam.Create(list(range(num_shards))) | "Spread" >> beam.Reshuffle()


@beam.ptransform_fn
def WriteShards(shards, images_dir: str, prefix: str, num_shards: int, verify: str = "pixels",  # noqa: N802
                plan_prefix: str | None = None):
    """Shard ids (plans under `plan_prefix`) or (shard, items) -> PREFIX-SSSSS-of-NNNNN.tfrecord files;
    DoOutputsTuple(written=..., rejected=...)."""
    fn = _WriteShardFn(images_dir, prefix, num_shards, verify, plan_prefix=plan_prefix)
    return shards | "WriteShard" >> beam.ParDo(fn).with_outputs(REJECTED_TAG, main="written")


# ----------------------------------------------------------------------------- driver

_DATAFLOW_REQUIRED = ("project", "region", "temp_location")


# Local runs: one process (Beam's in_memory mode; with --verify pixels its workers prepare images
# on threads, as JPEG decoding, reads and hashing release the GIL) or one worker process per core,
# which also spreads the Python (GIL-bound) part but costs seconds to start. Seconds per MB of
# images, measured with `python -m odpipe.bench records` (640x480 JPEGs, README "Performance"):
# one worker's whole work, the GIL-bound part of it, and the extra start-up of worker processes.
_WORK_S_PER_MB = {"pixels": 0.0105, "structure": 0.0024}
_GIL_S_PER_MB = 0.0015
_WORKER_STARTUP_S = 2.5


def direct_running_mode(total_bytes: float, verify: str = "pixels", cores: int | None = None) -> str:
    """DirectRunner mode for `total_bytes` of images: "multi_processing" only when the worker
    processes would save more time than they take to start, else "in_memory"."""
    cores = cores or os.cpu_count() or 1
    verify = _VERIFY_ALIASES.get(verify, verify)
    megabytes = total_bytes / 1e6
    work = megabytes * _WORK_S_PER_MB[verify]
    one_process = max(megabytes * _GIL_S_PER_MB, work / cores) if verify == "pixels" else work
    return "multi_processing" if one_process - work / cores > _WORKER_STARTUP_S else "in_memory"


def build_pipeline_options(runner: str = "DirectRunner", beam_args: list[str] | None = None,
                           estimated_bytes: float | None = None, verify: str = "pixels"):
    """PipelineOptions for `runner` (+ pass-through Beam flags).

    DirectRunner, unless the flags choose `--direct_running_mode`: `direct_running_mode(
    estimated_bytes, verify)` when the size of the images is known, else multi-process with one
    worker per core.
    DataflowRunner needs --project, --region and --temp_location (UserError otherwise).
    """
    from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

    args = list(beam_args or [])
    flags = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    if runner in ("DirectRunner", "direct"):
        mode = next((a.split("=", 1)[1] for a in args if a.startswith("--direct_running_mode=")), None)
        if "--direct_running_mode" not in flags:
            mode = "multi_processing" if estimated_bytes is None else direct_running_mode(estimated_bytes, verify)
            args.append(f"--direct_running_mode={mode}")
        if "--direct_num_workers" not in flags and mode in (None, "multi_processing", "multi_threading"):
            args.append("--direct_num_workers=0")
    options = PipelineOptions(["--runner", runner, *args])
    if runner in ("DataflowRunner", "dataflow"):
        gco = options.view_as(GoogleCloudOptions)
        missing = [f"--{name}" for name in _DATAFLOW_REQUIRED if not getattr(gco, name)]
        if missing:
            raise UserError(
                f"--runner {runner} needs {', '.join(missing)}; pass them (e.g. --project P --region us-central1 "
                "--temp_location gs://BUCKET/tmp --sdk_container_image IMAGE)"
            )
    return options


def mean_image_bytes(items: list[dict], images_dir: str, sample: int = 32) -> float | None:
    """Mean file size of up to `sample` images spread over the plan (None when none is readable)."""
    if not items:
        return None
    step = max(1, len(items) // sample)
    paths = [storage.join(images_dir, items[i]["filename"]) for i in range(0, len(items), step)][:sample]
    sizes = []
    for path in paths:
        try:
            sizes.append(storage.size(path))
        except Exception:  # noqa: BLE001 - a missing image is reported by the pipeline itself
            continue
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


def _shard_paths(prefix: str) -> list[str]:
    pattern = re.compile(re.escape(posixpath.basename(prefix.replace(os.sep, "/"))) + r"-\d{5}-of-\d{5}" + re.escape(SUFFIX) + "$")
    return [p for p in storage.glob(f"{prefix}-*-of-*{SUFFIX}") if pattern.search(p.replace(os.sep, "/"))]


def _counters(result) -> dict[str, int]:
    from apache_beam.metrics.metric import MetricsFilter

    out: dict[str, int] = {}
    try:
        query = result.metrics().query(MetricsFilter().with_namespace(COUNTER_NAMESPACE))
    except Exception:  # noqa: BLE001 - some runners do not report metrics
        return out
    for counter in query.get("counters", []):
        value = counter.committed if counter.committed is not None else counter.attempted
        out[counter.key.metric.name] = out.get(counter.key.metric.name, 0) + int(value or 0)
    return out


def _remove_tree(tmp_dir: str) -> None:
    """Delete the temporary folder (best effort: a failure here must not hide the real error)."""
    try:
        if storage.is_remote(tmp_dir):
            storage.delete(storage.glob(tmp_dir.rstrip("/") + "/**"))
        else:
            import shutil

            shutil.rmtree(tmp_dir, ignore_errors=True)
    except Exception:  # noqa: BLE001
        pass


def convert(
    csv_path: str,
    images_dir: str,
    label_map_path: str,
    output_prefix: str,
    shards: int | None = None,
    runner: str = "DirectRunner",
    beam_args: list[str] | None = None,
    verify: str = "pixels",
) -> dict:
    """Write `OUTPUT_PREFIX-SSSSS-of-NNNNN.tfrecord` + `OUTPUT_PREFIX.summary.json`; returns the summary.

    Args:
        csv_path: labels CSV (local or gs://), columns as written by `odpipe csv`.
        images_dir: folder the CSV's `filename` column is relative to (local or gs://).
        label_map_path: label map `.pbtxt`; every CSV class must be in it.
        output_prefix: path prefix of the shards and the summary (local or gs://).
        shards: number of shards; default about 128 MiB each.
        runner: Beam runner, "DirectRunner" (all cores: threads in this process, or worker processes for
            large jobs, see `direct_running_mode`; `--direct_running_mode` in beam_args overrides) or
            "DataflowRunner".
        beam_args: further Beam flags, e.g. ["--project=P", "--region=R", "--temp_location=gs://B/tmp"].
        verify: "pixels" (decode kept images: proves they decode) or "structure" (walk markers/chunks to the
            end: catches truncation and garbage, several times faster; "header" is an alias).
    """
    from odpipe.annotations import read_labels_csv
    from odpipe.label_map import read_label_map

    csv_path, images_dir, output_prefix = str(csv_path), str(images_dir), str(output_prefix)
    verify = _VERIFY_ALIASES.get(verify, verify)
    if verify not in VERIFY_MODES:
        raise UserError(f"--verify {verify}: choose one of {', '.join(VERIFY_MODES)}")
    if shards is not None and shards < 1:
        raise UserError(f"--shards {shards}: need at least 1 shard")
    build_pipeline_options(runner, beam_args)  # bad Dataflow flags fail before any reading
    label_map = read_label_map(str(label_map_path))
    frame = read_labels_csv(csv_path)
    plan = plan_images(frame, label_map, csv_path)
    items = plan["items"]
    mean_bytes = mean_image_bytes(items, images_dir)
    num_shards = shards or default_shards(items, images_dir, mean_bytes=mean_bytes)
    options = build_pipeline_options(runner, beam_args, (mean_bytes or 200_000) * len(items), verify)

    parent, base = (posixpath.split(output_prefix) if storage.is_remote(output_prefix) else os.path.split(output_prefix))
    if not base:
        raise UserError(f"-o {output_prefix}: give a file prefix such as records/train, not a folder")
    tmp_dir = storage.join(parent or ".", f".{base}.tmp-{uuid.uuid4().hex[:8]}")
    storage.makedirs(tmp_dir)
    plan_prefix = storage.join(tmp_dir, "plan")
    try:
        write_plan(items, plan_prefix, num_shards)
        # what the summary needs, not the plan itself (memory: no per-object dicts held while Beam runs)
        image_classes = {it["filename"]: tuple(o["class"] for o in it["objects"]) for it in items}
        del items, frame, plan["items"]
        tmp_prefix = storage.join(tmp_dir, "part")
        with beam.Pipeline(options=options) as pipeline:
            shard_ids = pipeline | "ShardIds" >> ShardIds(num_shards)
            outputs = shard_ids | "WriteShards" >> WriteShards(images_dir, tmp_prefix, num_shards, verify, plan_prefix)
            _ = (
                outputs[REJECTED_TAG]
                | "RejectedToJson" >> beam.Map(lambda r: json.dumps(r, ensure_ascii=False))
                | "WriteRejected" >> beam.io.WriteToText(storage.join(tmp_dir, "rejected"), file_name_suffix=".jsonl")
            )
        result = pipeline.result if hasattr(pipeline, "result") else None
        counters = _counters(result) if result is not None else {}

        rejected = []
        for path in storage.glob(storage.join(tmp_dir, "rejected*.jsonl")):
            rejected += [json.loads(line) for line in storage.read_text(path).splitlines() if line.strip()]
        rejected.sort(key=lambda r: r["file"])
        rejected_files = {r["file"] for r in rejected}
        classes = Counter(c for name, cs in image_classes.items() if name not in rejected_files for c in cs)
        written_images = len(image_classes) - len(rejected_files & image_classes.keys())

        new_shards = [shard_path(tmp_prefix, i, num_shards) for i in range(num_shards)]
        present = set(storage.glob(f"{tmp_prefix}-*-of-*{SUFFIX}"))
        for path in new_shards:  # a shard that got no image is still written, empty, so the set is complete
            if path not in present:
                storage.write_bytes(path, b"")
        finals = [f"{output_prefix}{p[len(tmp_prefix):]}" for p in new_shards]
        summary_path = f"{output_prefix}.summary.json"
        stale = _shard_paths(output_prefix) + ([summary_path] if storage.exists(summary_path) else [])
        storage.delete(stale)
        storage.rename(new_shards, finals)
        summary = {
            "images": written_images,
            "objects": sum(classes.values()),
            "classes": {name: classes.get(name, 0) for _, name in sorted(label_map.items())},
            "rejected": rejected,
            "dropped_objects": plan["dropped"],
            "clipped_objects": plan["clipped"],
            "converted": {k[len("converted_"):]: v for k, v in sorted(counters.items()) if k.startswith("converted_")},
            "exif_orientation_ignored": counters.get("exif_orientation_ignored", 0),
            "csv": {"path": csv_path, "rows": plan["rows"], "images": len(image_classes),
                    "objects": sum(map(len, image_classes.values())) + len(plan["dropped"])},
            "shards": finals,
            "counters": counters,
            "note": (
                "images + len(rejected) = csv.images (distinct filenames); objects = CSV rows with a class of the "
                "written images, minus dropped_objects; rows with an empty class are images without objects"
            ),
        }
        storage.write_text(summary_path, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        return summary
    finally:
        _remove_tree(tmp_dir)


# ----------------------------------------------------------------------------- CLI

_BEAM_FLAGS = (
    "project", "region", "temp_location", "staging_location", "sdk_container_image", "setup_file", "job_name",
    "max_num_workers", "num_workers", "machine_type", "service_account_email", "subnetwork",
    "direct_num_workers", "direct_running_mode",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("csv", help="labels CSV (local or gs://)")
    parser.add_argument("--images-dir", required=True, help="folder the CSV's filenames are relative to")
    parser.add_argument("--label-map", required=True, help="label_map.pbtxt")
    parser.add_argument("-o", "--output", required=True, help="output prefix, e.g. records/train (local or gs://)")
    parser.add_argument("--shards", type=int, help="number of shards (default: about 128 MiB each)")
    parser.add_argument("--runner", default="DirectRunner", help="DirectRunner (all cores) or DataflowRunner")
    parser.add_argument("--verify", choices=[*VERIFY_MODES, *_VERIFY_ALIASES], default="pixels",
                        help="pixels: decode every kept image, proving it decodes at its size (default); structure: "
                             "walk JPEG markers / PNG chunk CRCs to the end without decoding (several times faster; "
                             "catches truncation and garbage data, not damage only a decoder notices)")
    beam_group = parser.add_argument_group(
        "Beam options", "passed to Beam as --NAME=VALUE; any other Beam flag goes after --beam-options (last)")
    for name in _BEAM_FLAGS:
        beam_group.add_argument(f"--{name}", dest=f"beam_{name}", metavar="VALUE")
    parser.add_argument("--beam-options", dest="beam_args", nargs=argparse.REMAINDER, default=[], metavar="FLAG",
                        help="every argument after this goes to Beam as is, e.g. --beam-options --experiments=use_runner_v2")


def run(args: argparse.Namespace) -> int:
    import logging

    # Beam's local worker processes log start-up chatter as warnings; errors still show.
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    beam_args = [f"--{n}={getattr(args, f'beam_{n}')}" for n in _BEAM_FLAGS if getattr(args, f"beam_{n}", None)]
    beam_args += list(args.beam_args or [])
    summary = convert(args.csv, args.images_dir, args.label_map, args.output, shards=args.shards,
                      runner=args.runner, beam_args=beam_args, verify=args.verify)
    print(f"wrote {len(summary['shards'])} shard(s) {args.output}-*{SUFFIX}: {summary['images']} images, "
          f"{summary['objects']} objects; rejected {len(summary['rejected'])} image(s), "
          f"dropped {len(summary['dropped_objects'])} box(es), clipped {summary['clipped_objects']}")
    for name, count in summary["classes"].items():
        print(f"  {name}: {count}")
    if summary["counters"]:
        print("counters: " + ", ".join(f"{k}={v}" for k, v in sorted(summary["counters"].items())))
    for rej in summary["rejected"][:20]:
        print(f"  rejected {rej['file']}: {rej['reason']}", file=sys.stderr)
    if len(summary["rejected"]) > 20:
        print(f"  ... {len(summary['rejected']) - 20} more in {args.output}.summary.json", file=sys.stderr)
    print(f"summary: {args.output}.summary.json")
    return 0
