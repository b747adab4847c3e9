"""The data tasks: fingerprint (and the run's checks), annotations -> CSV, split, label map, records."""

from __future__ import annotations

from odpipe import fingerprint, storage
from odpipe.annotations import xml_to_csv
from odpipe.champion import Champion
from odpipe.errors import UserError
from odpipe.label_map import num_classes, write_label_map
from odpipe.schema import shard_pattern
from odpipe.settings import Settings
from odpipe.split import split_csv
from odpipe.tasks import Result, plain, scalars, to_json

# Imported inside functions: odpipe.records and odpipe.data_report (Apache Beam, TensorFlow: seconds) inside the task that runs them.

RECORDS_PREFIX = "records"  # a records artifact holds RECORDS_PREFIX-SSSSS-of-NNNNN.tfrecord + its summary
CSV_SIDES = ("train", "eval")


def records_pattern(records_dir: str) -> str:
    """The shard glob of a records artifact (the one place the artifact's file layout is spelt)."""
    return shard_pattern(storage.join(str(records_dir).rstrip("/"), RECORDS_PREFIX))


def fingerprint_task(annotations: str, images: str, champion_path: str, plan_path: str, fingerprint_path: str,
                     model_home: str = "", force: bool = False, settings: Settings | None = None) -> Result:
    """Checks the run's settings, fingerprints the data and reads the model in service (once).

    Writes the champion (champion.json), the plan (plan.json: fingerprints, verdict, message) and
    the fingerprint as text; the value is whether the run must train."""
    settings = settings or Settings()
    settings.check_numbers()
    settings.check_files()
    found = fingerprint.plan(annotations, images, model_home, force=force, settings=settings)
    champion: Champion = found.pop("champion")
    if found["changed"]:  # the model checks import TensorFlow: only when the run will train
        settings.check_model(champion.checkpoint)
    print(f"fingerprint: {found['message']}")
    champion.save(champion_path)
    storage.write_text(plan_path, to_json(found))
    storage.write_text(fingerprint_path, found["fingerprint"])
    summary = {"version": champion.version or "none", **champion.metrics}
    return Result({"champion": summary, "plan": scalars(found)}, bool(found["changed"]))


def csv_task(annotations: str, images: str, labels_path: str, report_path: str, strict: bool = False,
             fingerprint: str = "") -> Result:
    """labelImg XML folder -> labels CSV + report.json; counts as metadata and metrics."""
    result = xml_to_csv(annotations, labels_path, images_dir=images, report_path=report_path, strict=strict)
    counts = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for name in ("dropped", "dropped_images", "warnings"):
        if isinstance(result.get(name), (list, dict)):
            counts[name] = len(result[name])
    labels = {**counts, "classes": result.get("classes", {}), "fingerprint": fingerprint,
              "source": {"annotations": annotations, "images": images}}
    return Result({"labels": labels, "report": counts, "stats": counts})


def split_task(labels_csv: str, splits_dir: str, images: str = "", eval_fraction: float = 0.2, seed: int = 0,
               fingerprint: str = "") -> Result:
    """Labels CSV -> SPLITS/train.csv + eval.csv, by image, stratified (duplicates on one side)."""
    storage.makedirs(splits_dir)
    result = split_csv(labels_csv, splits_dir, eval_fraction=eval_fraction, seed=seed, images_dir=images or None)
    return Result({"splits": {**plain(result), "eval_fraction": eval_fraction, "seed": seed,
                              "fingerprint": fingerprint}})


def label_map_task(labels_csv: str, label_map_path: str, existing_label_map: str = "",
                   champion: Champion | str | None = None) -> Result:
    """The label map of the CSV's classes, keeping the ids of `existing_label_map`, else the champion's."""
    extend = existing_label_map or Champion.read(champion).label_map or None
    classes = write_label_map(labels_csv, label_map_path, extend=extend)
    return Result({"label_map": {"classes": {str(k): v for k, v in sorted(classes.items())},
                                 "num_classes": num_classes(classes), "class_count": len(classes),
                                 "extended_from": extend or ""}})


def records_task(splits_dir: str, label_map_path: str, images: str, records_dir: str, side: str = "train",
                 shards: int = 0, runner: str = "DirectRunner", beam_args: list[str] | None = None,
                 dataflow_image: str = "", fingerprint: str = "") -> Result:
    """One side of the split -> sharded TFRecords with Apache Beam (Dataflow gets the image as its SDK container)."""
    from odpipe.records import convert  # Beam: imported by the task that runs it

    args = list(beam_args or [])
    if runner == "DataflowRunner" and dataflow_image and not any("sdk_container_image" in a for a in args):
        args.append(f"--sdk_container_image={dataflow_image}")
    storage.makedirs(records_dir)  # a local folder is created; a bucket needs none
    prefix = storage.join(str(records_dir).rstrip("/"), RECORDS_PREFIX)
    summary = convert(storage.join(str(splits_dir).rstrip("/"), f"{side}.csv"), images, label_map_path, prefix,
                      shards=shards or None, runner=runner, beam_args=args)
    meta = {k: v for k, v in summary.items() if k != "rejected"}
    meta.update({"side": side, "pattern": records_pattern(records_dir), "rejected": len(summary.get("rejected", [])),
                 "runner": runner, "fingerprint": fingerprint})
    return Result({"records": meta})


def data_report_task(labels_csv: str, splits_dir: str, images: str, report_path: str, stats_dir: str,
                     champion: Champion | str | None = None, model: str = "retinanet-mobilenetv2",
                     image_size: int = 0, data_checks: str = "warn") -> Result:
    """The data report (HTML + data_stats.json) with drift against the champion's data; with
    data_checks="fail" an error in the data stops the run here, before training."""
    from odpipe import data_report

    if data_checks not in ("warn", "fail"):
        raise UserError(f"--data-checks {data_checks}: use warn or fail")
    previous = Champion.read(champion).data_stats or None
    storage.makedirs(stats_dir)
    result = data_report.build_report(labels_csv, stats_dir, splits_dir=splits_dir, images_dir=images or None,
                                      image_size=image_size or None, model=model, previous_stats=previous,
                                      strict=data_checks == "fail", progress=False)
    storage.write_bytes(report_path, storage.read_bytes(result["html"]))
    for item in result["anomalies"]:
        print(f"data {item['severity']}: {item['message']}")
    metrics = {k: v for k, v in result["headline"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return Result({"data_stats": {**result["headline"], "previous": previous or ""}, "report": {},
                   "data_metrics": metrics})
