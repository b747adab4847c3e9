"""A deterministic synthetic dataset in labelImg's exact output format.

`OUTDIR/images/*.jpg` and `OUTDIR/annotations/*.xml`: three classes of simple shapes (circle,
square, triangle) in random colours on solid, gradient or noisy backgrounds, 1-4 objects per
image, some images with none, images of varied sizes. It is the embedded data of `make demo` and
of the tests, and a small detector learns it in minutes on a CPU.
"""

from __future__ import annotations

import argparse
import io
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw

from odpipe import storage
from odpipe.errors import UserError

CLASSES = ("circle", "square", "triangle")


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    kind = rng.integers(3)
    base = rng.integers(0, 256, size=3)
    if kind == 0:
        arr = np.broadcast_to(base, (height, width, 3)).astype(np.float32)
    elif kind == 1:
        other = rng.integers(0, 256, size=3)
        t = np.linspace(0.0, 1.0, width if rng.integers(2) else height, dtype=np.float32)
        ramp = base[None, :] * (1 - t[:, None]) + other[None, :] * t[:, None]
        arr = ramp[None, :, :] if len(t) == width else ramp[:, None, :]
        arr = np.broadcast_to(arr, (height, width, 3)).astype(np.float32)
    else:
        arr = base + rng.normal(0, 40, size=(height, width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _contrasting_colour(rng: np.random.Generator, background: Image.Image, box) -> tuple[int, int, int]:
    region = np.asarray(background.crop(box), dtype=np.float32).reshape(-1, 3).mean(axis=0)
    for _ in range(20):
        colour = rng.integers(0, 256, size=3)
        if np.abs(colour - region).sum() > 200:
            break
    return tuple(int(c) for c in colour)


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def _draw(draw: ImageDraw.ImageDraw, cls: str, box, colour) -> None:
    x0, y0, x1, y1 = box
    if cls == "circle":
        draw.ellipse(box, fill=colour)
    elif cls == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=colour)


def voc_xml(filename: str, folder: str, path: str, width: int, height: int, depth: int, objects) -> str:
    """A Pascal VOC annotation exactly as labelImg writes it (tabs, field order, ints)."""
    lines = [
        "<annotation>",
        f"\t<folder>{escape(folder)}</folder>",
        f"\t<filename>{escape(filename)}</filename>",
        f"\t<path>{escape(path)}</path>",
        "\t<source>",
        "\t\t<database>Unknown</database>",
        "\t</source>",
        "\t<size>",
        f"\t\t<width>{width}</width>",
        f"\t\t<height>{height}</height>",
        f"\t\t<depth>{depth}</depth>",
        "\t</size>",
        "\t<segmented>0</segmented>",
    ]
    for obj in objects:
        name, (x0, y0, x1, y1) = obj[0], obj[1]
        difficult = obj[2] if len(obj) > 2 else 0
        lines += [
            "\t<object>",
            f"\t\t<name>{escape(name)}</name>",
            "\t\t<pose>Unspecified</pose>",
            "\t\t<truncated>0</truncated>",
            f"\t\t<difficult>{int(difficult)}</difficult>",
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{x0}</xmin>",
            f"\t\t\t<ymin>{y0}</ymin>",
            f"\t\t\t<xmax>{x1}</xmax>",
            f"\t\t\t<ymax>{y1}</ymax>",
            "\t\t</bndbox>",
            "\t</object>",
        ]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def make_image(rng: np.random.Generator, width: int, height: int, n_objects: int):
    """One synthetic image and its objects [(class, (xmin, ymin, xmax, ymax))] in pixels."""
    image = _background(rng, width, height)
    draw = ImageDraw.Draw(image)
    objects: list[tuple[str, tuple[int, int, int, int]]] = []
    short = min(width, height)
    for _ in range(n_objects):
        for _attempt in range(30):
            size = int(rng.uniform(0.18, 0.42) * short)
            w = int(size * rng.uniform(0.8, 1.25))
            h = int(size * rng.uniform(0.8, 1.25))
            x0 = int(rng.integers(0, width - w))
            y0 = int(rng.integers(0, height - h))
            box = (x0, y0, x0 + w, y0 + h)
            if all(_iou(box, other) < 0.1 for _, other in objects):
                break
        else:
            continue
        cls = CLASSES[int(rng.integers(len(CLASSES)))]
        _draw(draw, cls, box, _contrasting_colour(rng, image, box))
        # Pixel edges of the drawn shape (PIL fills x0..x1 inclusive), the CSV's convention.
        objects.append((cls, (box[0], box[1], min(box[2] + 1, width), min(box[3] + 1, height))))
    return image, objects


def write_sample_data(outdir: str, images: int = 60, seed: int = 0) -> dict:
    """Write the dataset (local or `gs://`); returns {"images", "objects", "empty_images", "classes"}."""
    if images < 1:
        raise UserError(f"--images {images}: need at least one image")
    if seed < 0:
        raise UserError(f"--seed {seed}: must be 0 or more")
    outdir = str(outdir)
    image_dir = storage.join(outdir, "images")
    ann_dir = storage.join(outdir, "annotations")
    storage.make_writable_dir(image_dir)
    storage.make_writable_dir(ann_dir)
    rng = np.random.default_rng(seed)
    counts = {c: 0 for c in CLASSES}
    empty = 0
    for i in range(images):
        width = int(rng.integers(14, 21)) * 16
        height = int(rng.integers(12, 19)) * 16
        n = 0 if rng.random() < 0.1 else int(rng.integers(1, 5))
        image, objects = make_image(rng, width, height, n)
        stem = f"sample_{i:05d}"
        filename = f"{stem}.jpg"
        encoded = io.BytesIO()
        image.save(encoded, format="JPEG", quality=92)
        image_path = storage.join(image_dir, filename)
        storage.write_bytes(image_path, encoded.getvalue())
        xml = voc_xml(filename, "images", storage.absolute(image_path), width, height, 3, objects)
        storage.write_text(storage.join(ann_dir, f"{stem}.xml"), xml)
        empty += not objects
        for cls, _ in objects:
            counts[cls] += 1
    return {"images": images, "objects": sum(counts.values()), "empty_images": empty, "classes": counts}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("outdir", help="folder to write images/ and annotations/ into")
    parser.add_argument("--images", type=int, default=60, help="number of images (default 60)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args: argparse.Namespace) -> int:
    summary = write_sample_data(args.outdir, images=args.images, seed=args.seed)
    classes = ", ".join(f"{k}={v}" for k, v in summary["classes"].items())
    print(
        f"wrote {summary['images']} images ({summary['empty_images']} without objects), "
        f"{summary['objects']} objects ({classes}) to {args.outdir}"
    )
    return 0
