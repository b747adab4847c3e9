"""Benchmark of the TFRecord stage (not a test): throughput against a raw read+write bound, and memory.

    python -m odpipe.bench records [--images 10000] [--small 1000] [--image-kind photo|tiny]
                                   [--direct-running-mode MODE] [--workdir DIR]

1. Generates N sample images (in parallel, one process per core; reused when already there) and
   their labels CSV / label map: by default 640x480 camera-like JPEGs (mean ~85 KB, textured), the size
   of downscaled real photos (`--image-kind tiny`: the 192-320 px ~15 KB sample-data images).
2. Raw bound: a plain sequential read of every image file and write of the same bytes into one
   file in the same folder (a subprocess, after a warm-up read so both runs see a warm page cache).
   Neither it nor the conversion fsyncs its output; `sync` runs before each measured run. The
   images are in the page cache (warm, default: reads are memory copies, the strictest bound) or,
   with --cold, evicted from it before every measured run (both read from the disk).
3. Conversion: `odpipe tfrecord` as a user runs it (DirectRunner in the mode odpipe picks for the
   size, or --direct-running-mode), timed end to end including Python/Beam start-up, with
   --verify pixels (default) and structure.
4. The same conversions on the first `--small` images: peak memory at two sizes, and the
   steady-state (marginal) rate (N - small) / (t_N - t_small), which cancels the fixed start-up.
   The small runs use the full runs' mode; when odpipe would pick another mode for the small size,
   one more small run shows that. The workers' own busy time (counter `shard_write_ms`, divided by
   the cores) gives the rate inside the pipeline, free of start-up noise.
Peak memory is the largest sum of RSS over the whole process tree (Beam's worker processes
included), sampled every 50 ms from /proc. Targets: conversion >= 50 % of the raw bound's
images/s, and peak memory at N within 20 % of that at the small size.
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

_RAW_COPY = r"""
import os, sys
src_list, out = sys.argv[1], sys.argv[2]
with open(src_list) as f, open(out, "wb") as w:
    for path in f.read().splitlines():
        with open(path, "rb") as r:
            w.write(r.read())
"""


IMAGE_KINDS = ("photo", "tiny")


def _texture(rng, width: int, height: int):
    """Photo-like texture: value noise at several scales (lighting, surfaces, fine grain), int16 around 0."""
    import numpy as np
    from PIL import Image

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
    import numpy as np
    from PIL import Image

    from odpipe.sample_data import make_image

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
    from odpipe.annotations import CSV_COLUMNS
    from odpipe.label_map import format_label_map
    from odpipe.sample_data import CLASSES

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


def _evict(paths: list[str]) -> None:
    """Drop these files' pages from the page cache (posix_fadvise; only these files, clean pages)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _convert_cmd(csv_path, data, prefix, verify="pixels", mode=None):
    cmd = [sys.executable, "-m", "odpipe", "tfrecord", csv_path, "--images-dir", data["images_dir"],
           "--label-map", data["label_map"], "-o", prefix, "--verify", verify]
    return cmd + ([f"--direct_running_mode={mode}"] if mode else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m odpipe.bench records", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="images to generate and convert (default 10000)")
    parser.add_argument("--small", type=int, default=1_000, help="smaller run for the memory comparison (0: skip)")
    parser.add_argument("--image-kind", choices=IMAGE_KINDS, default="photo",
                        help="photo: 640x480 camera-like JPEGs of 35-190 KB, mean ~85 KB (default); tiny: 192-320 px ~15 KB")
    parser.add_argument("--direct-running-mode", choices=["in_memory", "multi_threading", "multi_processing"],
                        help="force a DirectRunner mode (default: odpipe chooses by job size)")
    parser.add_argument("--cold", action="store_true",
                        help="evict the images from the page cache before every measured run (raw bound included), "
                             "so that both read from the disk (default: warm cache, reads are memory copies)")
    parser.add_argument("--workdir", help="scratch folder (default bench-output/records, records-tiny for tiny)")
    args = parser.parse_args(argv)
    args.workdir = args.workdir or os.path.join(
        "bench-output", "records" if args.image_kind == "photo" else f"records-{args.image_kind}")
    if args.images < 1:
        print("--images must be >= 1", file=sys.stderr)
        return 2
    from odpipe import records as rec

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    data = generate(args.workdir, args.images, kind=args.image_kind)
    files = _files(data["csv"], data["images_dir"])
    total_bytes = sum(os.path.getsize(p) for p in files)
    mb = total_bytes / 1e6
    print(f"dataset: {len(files)} images, {mb:.1f} MB in {data['images_dir']} "
          f"(generated in {data['seconds']:.1f} s)" if data["seconds"] else
          f"dataset: {len(files)} images, {mb:.1f} MB in {data['images_dir']} (reused)", flush=True)

    load_start = os.getloadavg()
    list_path = os.path.join(args.workdir, "files.txt")
    with open(list_path, "w") as f:
        f.write("\n".join(files))
    copy_out = os.path.join(args.workdir, "raw_copy.bin")
    run_measured([sys.executable, "-c", _RAW_COPY, list_path, copy_out])  # warm-up: page cache for both runs
    os.remove(copy_out)
    os.sync()  # every measured run starts with no dirty pages; none of them syncs its own writes
    if args.cold:
        _evict(files)
    raw = run_measured([sys.executable, "-c", _RAW_COPY, list_path, copy_out])
    os.remove(copy_out)

    out_dir = os.path.join(args.workdir, "out")
    shutil.rmtree(out_dir, ignore_errors=True)

    def convert(csv_path, name, verify="pixels", mode=None):
        os.sync()
        if args.cold:
            _evict(files)
        res = run_measured(_convert_cmd(csv_path, data, os.path.join(out_dir, name), verify, mode), env)
        if res["returncode"] != 0:
            print(res["output"][-3000:], file=sys.stderr)
            raise SystemExit(f"conversion {name} failed")
        return res

    def line(label, res, n, seconds=None):
        seconds = res["seconds"] if seconds is None else seconds
        return (f"{label:<42} {seconds:8.2f} s  {n / seconds:9.1f} images/s  "
                f"{mb / seconds * n / len(files):8.2f} MB/s  peak {res['peak_rss'] / 2**20:8.1f} MiB")

    n = len(files)
    small_n = args.small if 0 < args.small < n else max(1, n // 10)
    small_csv = _subset_csv(data["csv"], os.path.join(args.workdir, f"labels_{small_n}.csv"), small_n)
    small_mb = sum(os.path.getsize(p) for p in _files(small_csv, data["images_dir"])) / 1e6

    def auto_mode(megabytes, verify="pixels"):
        return rec.direct_running_mode(megabytes * 1e6, verify)

    # the small runs use the full runs' mode, so that memory and the marginal rate compare like with like
    modes = {v: args.direct_running_mode or auto_mode(mb, v) for v in ("pixels", "structure")}
    print("DirectRunner mode: " + ", ".join(f"--verify {v}: {m}" for v, m in modes.items())
          + ("" if args.direct_running_mode else " (odpipe's choice for this size)"), flush=True)
    runs = {}
    for verify in ("pixels", "structure"):
        runs[verify] = convert(data["csv"], f"full_{verify}", verify, modes[verify])
        runs[f"{verify}_small"] = convert(small_csv, f"small_{verify}", verify, modes[verify])
    small_auto = None
    if not args.direct_running_mode and auto_mode(small_mb) != modes["pixels"]:
        small_auto = convert(small_csv, "small_auto", "pixels")
    conv = runs["pixels"]
    summary = json.load(open(os.path.join(out_dir, "full_pixels.summary.json")))
    assert summary["images"] + len(summary["rejected"]) == n, "summary does not add up"

    print(line(f"raw read+write (1 process, {'cold' if args.cold else 'warm'} cache)", raw, n))
    ratios = {}
    result = {"images": n, "megabytes": mb, "cores": os.cpu_count(), "image_kind": args.image_kind, "modes": modes,
              "cache": "cold" if args.cold else "warm",
              "raw": {k: raw[k] for k in ("seconds", "peak_rss")}, "runs": {}}
    for verify in ("pixels", "structure"):
        full, small = runs[verify], runs[f"{verify}_small"]
        print(line(f"odpipe tfrecord --verify {verify}", full, n))
        # marginal cost per image: the difference between the two sizes cancels the fixed start-up
        extra = full["seconds"] - small["seconds"]
        startup = small["seconds"] - extra * small_n / (n - small_n) if n > small_n and extra > 0 else None
        if n > small_n and extra > 0.25 * full["seconds"] * (n - small_n) / n:
            print(line("  steady state (marginal)", full, n - small_n, extra) + f"   start-up ~{startup:.1f} s")
        else:
            extra = 0.0  # the size difference is lost in start-up noise at this N
            print("  steady state (marginal): below start-up noise at this N; use a larger --images")
        counters = json.load(open(os.path.join(out_dir, f"full_{verify}.summary.json")))["counters"]
        # shards are written one after another in one process (threads inside), or one per worker process
        parallel = (os.cpu_count() or 1) if modes[verify] != "in_memory" else 1
        busy = counters.get("shard_write_ms", 0) / 1000 / parallel
        if busy > 0:
            print(line("  inside the workers", full, n, busy))
        ratios[f"{verify}_in_workers"] = raw["seconds"] / busy if busy > 0 else None
        ratios[f"{verify}_end_to_end"] = raw["seconds"] / full["seconds"]
        ratios[f"{verify}_steady"] = (raw["seconds"] / n) / (extra / (n - small_n)) if extra > 0 and n > small_n else None
        result["runs"][verify] = {"seconds": full["seconds"], "peak_rss": full["peak_rss"],
                                  "small_seconds": small["seconds"], "startup_seconds": startup}
    if small_auto is not None:
        print(line(f"{small_n} images as odpipe runs them ({auto_mode(small_mb)}, --verify pixels)",
                   small_auto, small_n) + f" (vs {runs['pixels_small']['seconds']:.2f} s {modes['pixels']})")
        result["small_auto"] = {"mode": auto_mode(small_mb), "seconds": small_auto["seconds"],
                                "peak_rss": small_auto["peak_rss"]}
    for key, value in ratios.items():
        if value is not None:
            print(f"conversion / raw throughput ({key.replace('_', ' ')}): {value:.1%} "
                  f"(target >= 50%: {'met' if value >= 0.5 else 'NOT met'})")
    print(f"records: {summary['images']} images, {summary['objects']} objects, {len(summary['shards'])} shard(s)")
    growths = {}
    for verify in ("pixels", "structure"):
        small_peak, full_peak = runs[f"{verify}_small"]["peak_rss"], runs[verify]["peak_rss"]
        growths[verify] = growth = full_peak / small_peak - 1
        print(f"peak memory --verify {verify}: {small_n} images {small_peak / 2**20:.1f} MiB, {n} images "
              f"{full_peak / 2**20:.1f} MiB ({growth:+.1%}; target within 20%: "
              f"{'met' if abs(growth) <= 0.2 else 'NOT met'})")
    growth = growths["pixels"]
    load = os.getloadavg()
    print(f"load average: {load_start[0]:.2f} at the start, {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min) "
          f"at the end, on {os.cpu_count()} cores (other work on the machine slows every run)")
    result.update(ratios=ratios, small_images=small_n, memory_growth=growth, memory_growth_structure=growths["structure"],
                  loadavg_start=load_start, loadavg_end=load)
    with open(os.path.join(args.workdir, "result.json"), "w") as f:
        json.dump(result, f, indent=2)
    shutil.rmtree(out_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
