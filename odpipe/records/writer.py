"""Writing shards: one shard = one stream of plan items -> one TFRecord file, image by image.

`write_shard` is shared by both runners: the local one (`write_local`, this process, shards one
after another) and the Beam transform (`odpipe.records.transforms`, one shard per work item).
Images are read and prepared (`process_image`) by a few threads, at most `2 x threads` ahead of
the writer, so memory stays flat however large the shard: reads, JPEG decoding and hashing
release the GIL, so the threads use every core in one process (and overlap gs:// latency).
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor

from odpipe import progress, storage
from odpipe.records.example import process_image
from odpipe.records.images import Rejected
from odpipe.records.tfrecord import RecordWriter

# Imported inside functions: odpipe.progress's tqdm only for a bar on a terminal.


def default_threads(images_dir: str, verify: str) -> int:
    """Threads preparing images: cores + 2 where GIL-free work dominates (JPEG decoding with
    --verify pixels, or waiting on gs://); 2 for a local structure-only check, which is mostly
    Python (two still overlap disk reads from a cold cache)."""
    if verify == "pixels" or storage.is_remote(images_dir):
        return min(16, (os.cpu_count() or 1) + 2)
    return 2


def ordered_map(fn, items, threads: int):
    """(item, fn(item)) in order, computed by `threads` threads at most 2 x threads ahead."""
    if threads <= 1:
        for item in items:
            yield item, fn(item)
        return
    pending = iter(items)
    pool = ThreadPoolExecutor(threads, thread_name_prefix="odpipe-records")
    finished = False
    try:
        window = deque((item, pool.submit(fn, item)) for item in itertools.islice(pending, 2 * threads))
        while window:
            item, future = window.popleft()
            following = next(pending, None)
            if following is not None:
                window.append((following, pool.submit(fn, following)))
            yield item, future.result()
        finished = True
    finally:  # on an error or Ctrl-C, do not wait for the images in flight (a read may hang)
        pool.shutdown(wait=finished, cancel_futures=True)


def new_report() -> dict:
    return {"images": 0, "objects": 0, "bytes": 0, "exif_rotated": 0, "conversions": Counter(), "classes": Counter(),
            "rejected": [], "repaired": [], "ms": 0}


def write_shard(items, images_dir: str, path: str, verify: str = "pixels", threads: int | None = None,
                on_image=None) -> dict:
    """Write the records of `items` (plan items, in order) to the TFRecord file `path`.

    Returns the shard's report: counts, conversions, and the rejected and repaired images as
    [{"file", "reason"}] (a rejected image's counter key in "key"). `on_image()` is called once
    per image (progress).
    """
    report = new_report()
    started = time.perf_counter()
    threads = threads or default_threads(images_dir, verify)
    with storage.open_write(path) as out:
        writer = RecordWriter(out)
        for item, result in ordered_map(lambda it: process_image(it, images_dir, verify), items, threads):
            if on_image is not None:
                on_image()
            if isinstance(result, Rejected):
                report["rejected"].append({"file": item["filename"], "reason": str(result), "key": result.key})
                continue
            serialized, info = result
            writer.write(serialized)
            report["images"] += 1
            report["objects"] += info["objects"]
            report["classes"].update(o["class"] for o in item["objects"])
            report["bytes"] += info["bytes"]
            report["exif_rotated"] += info["exif_rotated"]
            if info["conversion"]:
                report["conversions"][info["conversion"]] += 1
            if info["repaired"]:
                report["repaired"].append({"file": item["filename"], "reason": info["repaired"]})
    report["ms"] = int((time.perf_counter() - started) * 1000)
    return report


def progress_bar(total: int, enabled: bool | None = None):
    """Images done / total on stderr (a bar on a terminal, plain lines in a log; `odpipe.progress`),
    or None when `enabled` is False."""
    if enabled is False:
        return None
    return progress.progress_bar(total, "tfrecord", "img", leave=True)


def write_local(folder: str, num_shards: int, images: int, images_dir: str, verify: str = "pixels",
                progress: bool | None = None, threads: int | None = None) -> list[dict]:
    """Write the shards planned in `folder` (`plan.write_plans`) to `folder/part-SSSSS-of-NNNNN.tfrecord`
    in this process, one after another (threads prepare the images); one report per shard.

    One process on purpose: worker processes were measured (10k raccoon photos, 2 cores) to help
    only `--verify structure` (its Python part holds the GIL) and to slow `--verify pixels`, whose
    decoding already runs on every core from threads; and a spawned worker re-imports the caller's
    main module, which breaks callers without a `__main__` guard.
    """
    from odpipe import schema
    from odpipe.records.plan import plan_path, read_plan

    bar = progress_bar(images, progress)
    try:
        return [write_shard(read_plan(plan_path(folder, shard)), images_dir,
                            schema.shard_path(storage.join(folder, "part"), shard, num_shards), verify, threads,
                            on_image=bar.update if bar is not None else None)
                for shard in range(num_shards)]
    finally:
        if bar is not None:
            bar.close()
