"""`convert`: labels CSV + images -> `PREFIX-SSSSS-of-NNNNN.tfrecord` + `PREFIX.summary.json`."""

from __future__ import annotations

from collections import Counter

from odpipe import schema
from odpipe.errors import UserError
from odpipe.records import plan as planning
from odpipe.records.images import VERIFY_MODES, normalise_verify
from odpipe.records.output import Staging

NOTE = ("images + len(rejected) = csv.images (distinct filenames); objects = CSV rows with a class of the written "
        "images, minus dropped_objects; rows with an empty class are images without objects; repaired images are "
        "written (decoded as far as the file goes and re-encoded)")


def uses_beam(runner: str, beam_args: list[str] | None) -> bool:
    """Beam runs the job for any runner but the DirectRunner, or when Beam flags are given; a plain
    local run goes through the same per-image functions in this process (no Beam start-up: about
    2-3 s of imports and pipeline set-up, measured, against a 1.5 s budget)."""
    return runner not in ("DirectRunner", "direct") or bool(beam_args)


def _summary(plan: dict, csv_images: int, csv_objects: int, reports: list[dict], label_map: dict,
             csv_path: str) -> dict:
    rejected = sorted((r for rep in reports for r in rep["rejected"]), key=lambda r: r["file"])
    repaired = sorted((r for rep in reports for r in rep["repaired"]), key=lambda r: r["file"])
    classes: Counter = Counter()
    conversions: Counter = Counter()
    for rep in reports:
        conversions.update(rep["conversions"])
        classes.update(rep["classes"])
    counters = {
        "images_written": sum(rep["images"] for rep in reports),
        "objects_written": sum(rep["objects"] for rep in reports),
        "bytes_written": sum(rep["bytes"] for rep in reports),
        "exif_orientation_ignored": sum(rep["exif_rotated"] for rep in reports),
        "images_repaired": len(repaired),
        "shard_write_ms": sum(rep["ms"] for rep in reports),
        **{f"rejected_{k}": v for k, v in Counter(r["key"] for r in rejected).items()},
        **{f"converted_{k}": v for k, v in conversions.items()},
    }
    return {
        "images": csv_images - len(rejected),
        "objects": sum(classes.values()),
        "classes": {name: classes.get(name, 0) for _, name in sorted(label_map.items())},
        "rejected": [{"file": r["file"], "reason": r["reason"]} for r in rejected],
        "repaired": repaired,
        "dropped_objects": plan["dropped"],
        "clipped_objects": plan["clipped"],
        "converted": dict(sorted(conversions.items())),
        "exif_orientation_ignored": counters["exif_orientation_ignored"],
        "csv": {"path": csv_path, "rows": plan["rows"], "images": csv_images,
                "objects": csv_objects + len(plan["dropped"])},
        "shards": [],
        "counters": dict(sorted(counters.items())),
        "note": NOTE,
    }


def convert(
    csv_path: str,
    images_dir: str,
    label_map_path: str,
    output_prefix: str,
    shards: int | None = None,
    runner: str = "DirectRunner",
    beam_args: list[str] | None = None,
    verify: str = "pixels",
    progress: bool | None = None,
    threads: int | None = None,
) -> dict:
    """Write `OUTPUT_PREFIX-SSSSS-of-NNNNN.tfrecord` + `OUTPUT_PREFIX.summary.json`; returns the summary.

    Args:
        csv_path: labels CSV (local or gs://), columns as written by `odpipe csv`.
        images_dir: folder the CSV's `filename` column is relative to (local or gs://).
        label_map_path: label map `.pbtxt`; every CSV class must be in it.
        output_prefix: path prefix of the shards and the summary (local or gs://).
        shards: number of shards; default about 128 MiB each.
        runner: "DirectRunner" (default: this process, threads on every core; with `beam_args`,
            Beam's DirectRunner) or "DataflowRunner".
        beam_args: Beam flags, e.g. ["--project=P", "--region=R", "--temp_location=gs://B/tmp"].
        verify: "pixels" (decode kept images: proves they decode) or "structure" (walk markers/chunks to the
            end: catches truncation and garbage, several times faster; "header" is an alias).
        progress: a progress bar on stderr (default: when stderr is a terminal).
        threads: threads preparing images in a local run (default `writer.default_threads`).
    """
    from odpipe.label_map import read_label_map
    from odpipe.records.writer import write_local

    csv_path, images_dir, output_prefix = str(csv_path), str(images_dir), str(output_prefix)
    verify = normalise_verify(verify)
    if verify not in VERIFY_MODES:
        raise UserError(f"--verify {verify}: choose one of {', '.join(VERIFY_MODES)}")
    if shards is not None and shards < 1:
        raise UserError(f"--shards {shards}: need at least 1 shard")
    options = None
    if uses_beam(runner, beam_args):
        from odpipe.records.transforms import build_pipeline_options

        options = build_pipeline_options(runner, beam_args)  # bad Dataflow flags fail before any reading
    staging = Staging(output_prefix)
    label_map = read_label_map(str(label_map_path))
    plan = planning.plan_rows(schema.iter_labels(csv_path), label_map, csv_path)
    items = plan.pop("items")
    if not items:
        raise UserError(f"{csv_path}: the CSV lists no image; write it with `odpipe csv` (and `odpipe split`)")
    num_shards = shards or planning.default_shards(items, images_dir)
    csv_images, csv_objects = len(items), sum(len(it["objects"]) for it in items)
    launched: dict = {}
    staging.open()
    try:
        planning.write_plans(items, staging.dir, num_shards)
        del items  # the shard writers stream the plan files: the driver's memory stays flat
        if options is None:
            reports = write_local(staging.dir, num_shards, csv_images, images_dir, verify, progress, threads)
        else:
            from odpipe.records.transforms import write_beam

            reports = write_beam(num_shards, staging.dir, images_dir, verify, options, launched)
        summary = _summary(plan, csv_images, csv_objects, reports, label_map, csv_path)
        summary.update(launched)  # the Dataflow job id and console page, when one ran
        if summary["images"] == 0:
            first = summary["rejected"][0]
            raise UserError(
                f"{csv_path}: 0 of {csv_images} images written; first rejection: {first['file']}: "
                f"{first['reason']}; check --images-dir and the images (nothing was replaced at {output_prefix})"
            )
        summary["stale_temp_folders_removed"] = len(staging.cleaned)
        staging.commit(num_shards, summary)
        return summary
    except OSError as err:
        from odpipe.records.output import write_error

        raise write_error(output_prefix, err) from None
    finally:
        staging.discard()
