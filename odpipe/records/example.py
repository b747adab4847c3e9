"""One image -> one serialized `tf.train.Example` (keys and encoder: `odpipe.schema`).

`image_to_example` is pure (plan item + file bytes -> record); `read_image` is the one place an
image file is read; `process_image` is both, the per-image function that the local writer and the
Beam transform map over the plan.
"""

from __future__ import annotations

import hashlib

from odpipe import schema, storage
from odpipe.errors import first_line
from odpipe.records.images import Rejected, prepare_image


def image_to_example(item: dict, data: bytes, verify: str = "pixels") -> tuple[bytes, dict]:
    """Plan item + its file bytes -> (serialized Example, info); raises Rejected.

    info: {"objects": int, "conversion": str|None, "exif_rotated": bool, "repaired": str|None, "bytes": int}.
    """
    image = prepare_image(data, verify)
    objects = item["objects"]
    if (image.width, image.height) != (item["width"], item["height"]) and objects:
        raise Rejected(
            "size_mismatch",
            f"image is {image.width}x{image.height} pixels but the CSV says {item['width']}x{item['height']}; "
            "regenerate the CSV with `odpipe csv --images-dir` from these images",
        )
    values = {
        schema.ENCODED: [image.data],
        schema.FORMAT: [image.format],
        schema.HEIGHT: [image.height],
        schema.WIDTH: [image.width],
        schema.FILENAME: [item["filename"]],
        schema.SOURCE_ID: [str(item["source_id"])],
        schema.SHA256: [hashlib.sha256(image.data).hexdigest()],
        schema.XMIN: [o["xmin"] for o in objects],
        schema.YMIN: [o["ymin"] for o in objects],
        schema.XMAX: [o["xmax"] for o in objects],
        schema.YMAX: [o["ymax"] for o in objects],
        schema.CLASS_TEXT: [o["class"] for o in objects],
        schema.CLASS_LABEL: [o["label"] for o in objects],
        schema.AREA: [o["area"] for o in objects],
        schema.IS_CROWD: [0] * len(objects),
        schema.DIFFICULT: [o["difficult"] for o in objects],
        schema.TRUNCATED: [o["truncated"] for o in objects],
    }
    info = {"objects": len(objects), "conversion": image.conversion, "exif_rotated": image.exif_rotated,
            "repaired": image.repaired, "bytes": len(image.data)}
    return schema.encode_example(values), info


def read_image(images_dir: str, item: dict) -> bytes:
    """The bytes of an item's image file; a missing or locally unreadable file is Rejected (a bucket
    error may be transient and is raised as is: a Beam runner retries the shard)."""
    path = storage.join(images_dir, item["filename"])
    try:
        return storage.read_bytes(path)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise Rejected("missing", f"image file not found at {path}") from None
    except OSError as err:
        if storage.is_remote(path):
            raise
        raise Rejected("unreadable", f"cannot read the image file {path} ({type(err).__name__}: {first_line(err)})") from None


def process_image(item: dict, images_dir: str, verify: str = "pixels"):
    """(serialized, info) for one plan item, or the Rejected explaining why it cannot be written."""
    try:
        return image_to_example(item, read_image(images_dir, item), verify)
    except Rejected as rej:
        return rej
