"""Benchmark of the TFRecord stage (not a test): odpipe against the classic `generate_tfrecord.py`.

    python -m odpipe.bench records [--images 10000] [--small 1000] [--image-kind photo|tiny]
                                   [--source DIR] [--workdir DIR]

1. Data: N camera-like 640x480 JPEGs (mean ~85 KB, textured; generated in parallel, reused when
   already there) with their labels CSV and label map; or, with `--source DIR` (a labelImg folder
   with images/ and annotations/, e.g. /work/shared/datasets/raccoon), that real dataset cycled to
   N images (hard links into sub-folders).
2. Baseline, same files, same run: the logic of the classic `generate_tfrecord.py` (TF Object
   Detection API tutorials, detection_util_scripts): pandas groupby on filename, per image
   `GFile(...).read()` (TensorFlow's file API), a Pillow header for the size, `iterrows` over the boxes, a
   `tf.train.Example`, one `tf.io.TFRecordWriter` file. Timed end to end as a user runs it
   (`_CLASSIC`, a subprocess: imports included).
3. odpipe: `odpipe tfrecord` as a user runs it (a subprocess, imports included) with `--verify
   pixels` (default: every image decodes) and `--verify structure`, on N and on the first
   `--small` images (peak memory at two sizes), and on one image (start-up: the whole run on one
   image, an upper bound of "import to first image").
Peak memory is the largest sum of RSS over the process tree, sampled every 50 ms from /proc. The
page cache is warm for every run (a warm-up read first). Targets (issue 10): pixels >= 3x the
classic script, structure >= 5x, peak memory at N within 20 % of that at --small, start-up < 1.5 s.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image

from odpipe.annotations import xml_to_csv
from odpipe.label_map import format_label_map, write_label_map
from odpipe.sample_data import CLASSES, make_image
from odpipe.schema import CSV_COLUMNS

# The classic generate_tfrecord.py (detection_util_scripts / TF OD API tutorials), its logic as is:
# argv: csv, images_dir, label_map, output
_CLASSIC = r"""
import io, os, sys
from collections import namedtuple
import pandas as pd
import tensorflow as tf
from PIL import Image
from odpipe.label_map import read_label_map

def int64_feature(v): return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
def int64_list_feature(v): return tf.train.Feature(int64_list=tf.train.Int64List(value=v))
def bytes_feature(v): return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
def bytes_list_feature(v): return tf.train.Feature(bytes_list=tf.train.BytesList(value=v))
def float_list_feature(v): return tf.train.Feature(float_list=tf.train.FloatList(value=v))

def split(df, group):
    data = namedtuple("data", ["filename", "object"])
    gb = df.groupby(group)
    return [data(filename, gb.get_group(x)) for filename, x in zip(gb.groups.keys(), gb.groups)]

def create_tf_example(group, path, class_dict):
    with tf.io.gfile.GFile(os.path.join(path, "{}".format(group.filename)), "rb") as fid:
        encoded_jpg = fid.read()
    image = Image.open(io.BytesIO(encoded_jpg))
    width, height = image.size
    filename = group.filename.encode("utf8")
    xmins, xmaxs, ymins, ymaxs, classes_text, classes = [], [], [], [], [], []
    for index, row in group.object.iterrows():
        if not isinstance(row["class"], str):
            continue  # an image without objects
        xmins.append(row["xmin"] / width); xmaxs.append(row["xmax"] / width)
        ymins.append(row["ymin"] / height); ymaxs.append(row["ymax"] / height)
        classes_text.append(str(row["class"]).encode("utf8")); classes.append(class_dict[str(row["class"])])
    return tf.train.Example(features=tf.train.Features(feature={
        "image/height": int64_feature(height), "image/width": int64_feature(width),
        "image/filename": bytes_feature(filename), "image/source_id": bytes_feature(filename),
        "image/encoded": bytes_feature(encoded_jpg), "image/format": bytes_feature(b"jpg"),
        "image/object/bbox/xmin": float_list_feature(xmins), "image/object/bbox/xmax": float_list_feature(xmaxs),
        "image/object/bbox/ymin": float_list_feature(ymins), "image/object/bbox/ymax": float_list_feature(ymaxs),
        "image/object/class/text": bytes_list_feature(classes_text), "image/object/class/label": int64_list_feature(classes),
    }))

csv_input, image_dir, label_map, output_path = sys.argv[1:5]
class_dict = {name: i for i, name in read_label_map(label_map).items()}
writer = tf.io.TFRecordWriter(output_path)
for group in split(pd.read_csv(csv_input), "filename"):
    writer.write(create_tf_example(group, image_dir, class_dict).SerializeToString())
writer.close()
"""
_WARM = r"""
import sys
for path in open(sys.argv[1]).read().splitlines():
    open(path, "rb").read()
"""


IMAGE_KINDS = ("photo", "tiny")


def _texture(rng, width: int, height: int):
    """Photo-like texture: value noise at several scales (lighting, surfaces, fine grain), int16 around 0."""
    acc, amp = None, 44.0
    for cell in (160, 48, 12, 3):
        gh, gw = height // cell + 2, width // cell + 2
        small = Image.fromarray(rng.integers(0, 256, (gh, gw, 3), dtype=np.uint8), "RGB")
        layer = np.asarray(small.resize((gw * cell, gh * cell), Image.BILINEAR).crop((0, 0, width, height)), np.float32)
        layer = (layer - 128) * (amp / 128)
        acc = layer if acc is None else acc + layer
        amp *= 0.6
    return acc


def _make_chunk(args) -> list[list]:
    """Images start..stop-1 (seeded per image, so any chunking gives the same data) -> CSV rows.

    kind "photo": 640x480 (some 480x640, 640x360) camera-like JPEGs, quality 90, textured so that
    they weigh 35-190 KB (median ~50, mean ~85 KB) like downscaled real photos; "tiny": the sample data's
    192-320 px flat-coloured JPEGs (~10-25 KB).
    """
    images_dir, start, stop, seed, kind = args
    rows = []
    for i in range(start, stop):
        rng = np.random.default_rng([seed, i])
        if kind == "photo":
            width, height = ((640, 480), (640, 480), (640, 480), (480, 640), (640, 360))[int(rng.integers(5))]
        else:
            width, height = int(rng.integers(14, 21)) * 16, int(rng.integers(12, 19)) * 16
        n = 0 if rng.random() < 0.1 else int(rng.integers(1, 5))
        image, objects = make_image(rng, width, height, n)
        if kind == "photo":
            arr = np.asarray(image, np.float32) * 0.7 + 40 + _texture(rng, width, height)
            image = Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")
        name = f"img_{i:06d}.jpg"
        image.save(os.path.join(images_dir, name), quality=90 if kind == "photo" else 92)
        if not objects:
            rows.append([name, width, height, "", "", "", "", "", 0, 0])
        for cls, (x0, y0, x1, y1) in objects:
            rows.append([name, width, height, cls, x0 - 1, y0 - 1, x1, y1, 0, 0])
    return rows


def generate(workdir: str, images: int, seed: int = 0, kind: str = "photo") -> dict:
    """Sample images + labels.csv + label_map.pbtxt under workdir (reused if the CSV matches)."""
    images_dir = os.path.join(workdir, "images")
    csv_path = os.path.join(workdir, "labels.csv")
    stamp = os.path.join(workdir, "generated.json")
    if os.path.exists(stamp) and json.load(open(stamp)) == {"images": images, "seed": seed, "kind": kind}:
        return {"images_dir": images_dir, "csv": csv_path, "label_map": os.path.join(workdir, "label_map.pbtxt"),
                "seconds": 0.0}
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(images_dir)
    t0 = time.perf_counter()
    step = 100
    tasks = [(images_dir, s, min(images, s + step), seed, kind) for s in range(0, images, step)]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        chunks = list(pool.map(_make_chunk, tasks))
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for rows in chunks:
            w.writerows(rows)
    map_path = os.path.join(workdir, "label_map.pbtxt")
    with open(map_path, "w", encoding="utf-8") as f:
        f.write(format_label_map({i + 1: c for i, c in enumerate(CLASSES)}))
    with open(stamp, "w") as f:
        json.dump({"images": images, "seed": seed, "kind": kind}, f)
    return {"images_dir": images_dir, "csv": csv_path, "label_map": map_path, "seconds": time.perf_counter() - t0}


def _tree_rss(root_pid: int) -> int:
    """Sum of RSS (bytes) of root_pid and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            fields = stat[stat.rindex(")") + 2:].split()
            pid, ppid = int(entry), int(fields[1])
            children.setdefault(ppid, []).append(pid)
            rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def run_measured(cmd: list[str], env: dict | None = None) -> dict:
    """Run cmd; returns {"seconds", "peak_rss", "returncode", "output"}."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.communicate()[0].decode("utf-8", "replace")
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    return {"seconds": seconds, "peak_rss": peak, "returncode": proc.returncode, "output": output}


def _subset_csv(csv_path: str, out_path: str, images: int) -> str:
    keep: set[str] = set()
    with open(csv_path, newline="", encoding="utf-8") as f, open(out_path, "w", newline="", encoding="utf-8") as o:
        reader, writer = csv.reader(f), csv.writer(o)
        writer.writerow(next(reader))
        for row in reader:
            if row[0] not in keep and len(keep) >= images:
                continue
            keep.add(row[0])
            writer.writerow(row)
    return out_path


def _files(csv_path: str, images_dir: str) -> list[str]:
    with open(csv_path, newline="", encoding="utf-8") as f:
        names = sorted({row["filename"] for row in csv.DictReader(f)})
    return [os.path.join(images_dir, n) for n in names]


def cycle(source: str, workdir: str, images: int) -> dict:
    """A real labelImg dataset (`source`/images, `source`/annotations) cycled to `images` images:
    hard links (or copies) in sub-folders c000/, c001/, ...; labels CSV via `odpipe csv`."""
    images_dir = os.path.join(workdir, "images")
    csv_path = os.path.join(workdir, "labels.csv")
    stamp = os.path.join(workdir, "generated.json")
    key = {"images": images, "source": os.path.abspath(source)}
    map_path = os.path.join(workdir, "label_map.pbtxt")
    if os.path.exists(stamp) and json.load(open(stamp)) == key:
        return {"images_dir": images_dir, "csv": csv_path, "label_map": map_path, "seconds": 0.0}
    t0 = time.perf_counter()
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(images_dir)
    base_csv = os.path.join(workdir, "source.csv")
    xml_to_csv(os.path.join(source, "annotations"), base_csv, images_dir=os.path.join(source, "images"))
    write_label_map(base_csv, map_path)
    with open(base_csv, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    names = sorted({r[0] for r in rows})
    out_rows = []
    for k in range(-(-images // len(names))):
        folder = os.path.join(images_dir, f"c{k:03d}")
        os.makedirs(folder)
        take = names[: images - k * len(names)]
        for name in take:
            src, dst = os.path.join(source, "images", name), os.path.join(folder, name)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
        chosen = set(take)
        out_rows += [[f"c{k:03d}/{r[0]}", *r[1:]] for r in rows if r[0] in chosen]
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(out_rows)
    with open(stamp, "w") as f:
        json.dump(key, f)
    return {"images_dir": images_dir, "csv": csv_path, "label_map": map_path, "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m odpipe.bench records", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="images to convert (default 10000)")
    parser.add_argument("--small", type=int, default=1_000, help="smaller run for the memory comparison (default 1000)")
    parser.add_argument("--image-kind", choices=IMAGE_KINDS, default="photo",
                        help="photo: 640x480 camera-like JPEGs of 35-190 KB, mean ~85 KB (default); tiny: 192-320 px ~15 KB")
    parser.add_argument("--source", help="a labelImg dataset folder (images/, annotations/) to cycle instead of "
                                         "generated images, e.g. /work/shared/datasets/raccoon")
    parser.add_argument("--workdir", help="scratch folder (default bench-output/records[-KIND])")
    args = parser.parse_args(argv)
    if args.images < 2:
        print("--images must be >= 2", file=sys.stderr)
        return 2
    kind = "source" if args.source else args.image_kind
    args.workdir = args.workdir or os.path.join("bench-output", "records" if kind == "photo" else f"records-{kind}")
    data = cycle(args.source, args.workdir, args.images) if args.source else generate(args.workdir, args.images, kind=kind)
    files = _files(data["csv"], data["images_dir"])
    n = len(files)
    mb = sum(os.path.getsize(p) for p in files) / 1e6
    print(f"dataset: {n} images, {mb:.1f} MB in {data['images_dir']} "
          + (f"(made in {data['seconds']:.1f} s)" if data["seconds"] else "(reused)"), flush=True)
    small_n = args.small if 0 < args.small < n else max(1, n // 10)
    list_path = os.path.join(args.workdir, "files.txt")
    with open(list_path, "w") as f:
        f.write("\n".join(files))
    out_dir = os.path.join(args.workdir, "out")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    load_start = os.getloadavg()
    run_measured([sys.executable, "-c", _WARM, list_path])  # warm page cache for every run
    runs = _runs(data, args.workdir, small_n, out_dir)
    with open(os.path.join(out_dir, "full_pixels.summary.json")) as f:
        summary = json.load(f)
    assert summary["images"] + len(summary["rejected"]) == n, "summary does not add up"
    ratios, growth = _print_runs(runs, n, small_n)
    startup = runs["startup"]["seconds"]
    print(f"start-up: a whole run on 1 image {startup:.2f} s (best of 3; target < 1.5 s: "
          f"{'met' if startup < 1.5 else 'NOT met'})")
    print(f"records: {summary['images']} images, {summary['objects']} objects, {len(summary['shards'])} shard(s); "
          f"rejected {len(summary['rejected'])}, repaired {len(summary['repaired'])}")
    load = os.getloadavg()
    print(f"load average: {load_start[0]:.2f} at the start, {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min) "
          f"at the end, on {os.cpu_count()} cores (other work on the machine slows every run)")
    result = {"images": n, "megabytes": mb, "cores": os.cpu_count(), "kind": kind, "small_images": small_n,
              "runs": {k: {"seconds": v["seconds"], "peak_rss": v["peak_rss"]} for k, v in runs.items()},
              "ratios": ratios, "memory_growth": growth, "startup_seconds": startup,
              "loadavg_start": load_start, "loadavg_end": load}
    with open(os.path.join(args.workdir, "result.json"), "w") as f:
        json.dump(result, f, indent=2)
    shutil.rmtree(out_dir, ignore_errors=True)
    return 0


def _runs(data: dict, workdir: str, small_n: int, out_dir: str) -> dict:
    """The measured runs: the classic script; odpipe with each --verify on all images and on `small_n`;
    odpipe on one image (best of 3)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    small_csv = _subset_csv(data["csv"], os.path.join(workdir, f"labels_{small_n}.csv"), small_n)
    one_csv = _subset_csv(data["csv"], os.path.join(workdir, "labels_1.csv"), 1)

    def measured(label, cmd):
        os.sync()
        res = run_measured(cmd, env)
        if res["returncode"] != 0:
            print(res["output"][-3000:], file=sys.stderr)
            raise SystemExit(f"{label} failed")
        return res

    def odpipe_cmd(csv_path, name, verify):
        return [sys.executable, "-m", "odpipe", "tfrecord", csv_path, "--images-dir", data["images_dir"],
                "--label-map", data["label_map"], "-o", os.path.join(out_dir, name), "--verify", verify]

    runs = {"classic": measured("classic", [sys.executable, "-c", _CLASSIC, data["csv"], data["images_dir"],
                                            data["label_map"], os.path.join(out_dir, "classic.tfrecord")])}
    for verify in ("pixels", "structure"):
        runs[verify] = measured(verify, odpipe_cmd(data["csv"], f"full_{verify}", verify))
        runs[f"{verify}_small"] = measured(verify, odpipe_cmd(small_csv, f"small_{verify}", verify))
    runs["startup"] = min((measured("one image", odpipe_cmd(one_csv, f"one_{i}", "pixels")) for i in range(3)),
                          key=lambda r: r["seconds"])
    return runs


def _print_runs(runs: dict, n: int, small_n: int) -> tuple[dict, dict]:
    """Print each run's time, rate and peak memory against the targets; (speed ratios, memory growth)."""
    def line(label, res, count):
        return (f"{label:<44} {res['seconds']:8.2f} s  {count / res['seconds']:8.1f} images/s  "
                f"peak {res['peak_rss'] / 2**20:7.1f} MiB")

    print(line("classic generate_tfrecord.py logic", runs["classic"], n))
    ratios = {}
    for verify, target in (("pixels", 3.0), ("structure", 5.0)):
        print(line(f"odpipe tfrecord --verify {verify}", runs[verify], n))
        ratios[verify] = runs["classic"]["seconds"] / runs[verify]["seconds"]
        print(f"  {ratios[verify]:.2f}x the classic script (target >= {target:.0f}x: "
              f"{'met' if ratios[verify] >= target else 'NOT met'})")
    growth = {}
    for verify in ("pixels", "structure"):
        small_peak, full_peak = runs[f"{verify}_small"]["peak_rss"], runs[verify]["peak_rss"]
        growth[verify] = full_peak / small_peak - 1
        print(f"peak memory --verify {verify}: {small_n} images {small_peak / 2**20:.1f} MiB, {n} images "
              f"{full_peak / 2**20:.1f} MiB ({growth[verify]:+.1%}; target within 20%: "
              f"{'met' if abs(growth[verify]) <= 0.2 else 'NOT met'})")
    return ratios, growth


if __name__ == "__main__":
    sys.exit(main())
