"""The benchmark datasets, each taken through odpipe's real stages (CSV, split by image, label map,
Beam records):

- `sample`: the generated sample data (`odpipe sample-data`, 200 images, three classes of large
  shapes, 1-4 per image);
- `raccoon`: 200 real labelImg photos, one class, mostly large objects (../shared/datasets/raccoon);
- `crowded`: generated photo-like 640x480 scenes with 12-30 small objects each (16-56 px, three
  classes, touching and overlapping allowed): the case a small input size would lose.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from odpipe.annotations import xml_to_csv
from odpipe.label_map import write_label_map
from odpipe.records import convert
from odpipe.sample_data import voc_xml, write_sample_data
from odpipe.split import split_csv

CROWDED_CLASSES = ("disc", "box", "bar")


def prepare(labelimg_dir: str, workdir: str, eval_fraction: float = 0.2) -> dict:
    """labelImg folder (images/, annotations/) -> {"train", "eval", "label_map"} through odpipe's stages."""
    os.makedirs(workdir, exist_ok=True)
    csv = os.path.join(workdir, "labels.csv")
    xml_to_csv(os.path.join(labelimg_dir, "annotations"), csv, images_dir=os.path.join(labelimg_dir, "images"))
    split_csv(csv, os.path.join(workdir, "split"), eval_fraction=eval_fraction, seed=0)
    label_map = os.path.join(workdir, "label_map.pbtxt")
    write_label_map(csv, label_map)
    out = {"label_map": label_map}
    for side in ("train", "eval"):
        prefix = os.path.join(workdir, "records", side)
        convert(os.path.join(workdir, "split", f"{side}.csv"), os.path.join(labelimg_dir, "images"), label_map, prefix,
                shards=2)
        out[side] = prefix + "-*.tfrecord"
    return out


def write_crowded(outdir: str, images: int = 200, seed: int = 0) -> str:
    """`images` crowded 640x480 scenes in labelImg's format under `outdir`; returns `outdir`."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(outdir, "images"), exist_ok=True)
    os.makedirs(os.path.join(outdir, "annotations"), exist_ok=True)
    width, height = 640, 480
    for i in range(images):
        base = rng.integers(40, 200, 3)
        noise = rng.normal(0, 25, (height // 8, width // 8, 3))
        texture = np.kron(noise, np.ones((8, 8, 1)))  # blotchy, photo-like clutter
        image = Image.fromarray(np.clip(base + texture, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(2))
        draw = ImageDraw.Draw(image)
        objects = []
        for _ in range(int(rng.integers(12, 31))):
            cls = CROWDED_CLASSES[int(rng.integers(len(CROWDED_CLASSES)))]
            size = int(rng.uniform(16, 56))
            w, h = (size, size) if cls != "bar" else (max(6, size // 3), size)
            x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            shape = draw.ellipse if cls == "disc" else draw.rectangle
            shape((x0, y0, x0 + w - 1, y0 + h - 1), fill=colour, outline=(0, 0, 0))
            objects.append((cls, (x0, y0, x0 + w, y0 + h)))
        name = f"crowded_{i:04d}.jpg"
        image.save(os.path.join(outdir, "images", name), quality=88)
        with open(os.path.join(outdir, "annotations", f"crowded_{i:04d}.xml"), "w", encoding="utf-8") as f:
            f.write(voc_xml(name, "images", name, width, height, 3, objects))
    return outdir


def default_raccoon() -> str:
    """../shared/datasets/raccoon beside the checkout (or beside the folder holding it, for a worktree)."""
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    candidates = [os.path.join(root, *[".."] * up, "shared", "datasets", "raccoon") for up in (1, 2)]
    return next((os.path.normpath(c) for c in candidates if os.path.isdir(c)), os.path.normpath(candidates[0]))


def build(names: list[str], workdir: str, raccoon: str | None = None) -> dict[str, dict]:
    """{name: prepared records} for the benchmark datasets `names` (raccoon skipped when absent)."""
    out = {}
    for name in names:
        folder = os.path.join(workdir, name)
        if name == "sample":
            write_sample_data(folder, images=200, seed=0)
        elif name == "crowded":
            write_crowded(folder)
        elif name == "raccoon":
            folder = raccoon or default_raccoon()
            if not os.path.isdir(os.path.join(folder, "annotations")):
                print(f"  no raccoon dataset at {folder}; skipped", flush=True)
                continue
        else:
            raise ValueError(f"unknown benchmark dataset {name!r}")
        out[name] = prepare(folder, os.path.join(workdir, f"{name}-work"))
    return out
