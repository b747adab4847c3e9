"""The records stage on Apache Beam (Dataflow, or the DirectRunner when Beam flags are given).

    shard ids | ShardIds (Create + Reshuffle) | WriteShards -> one TFRecord file + report per shard

Only shard ids go through Beam: each shard is written by one worker, which streams its plan file
(JSON lines under the run's temporary folder) image by image through the same per-image
functions as the local run (`writer.write_shard` over `example.process_image`). Beam's own
`WriteToTFRecord` would need the serialized records as a PCollection: with a fixed number of
shards it groups every record by shard key, so each image's bytes would be serialized, shuffled
and stored once more (on Dataflow: through the shuffle service) before being written; streaming
per-shard writers move each image's bytes once, from the bucket into its shard. A retried bundle
rewrites the same shard file and report, so retries are idempotent. Counters
(namespace `odpipe.records`) are for monitoring; the summary is built from the shard reports.
"""

from __future__ import annotations

import json

import apache_beam as beam

from odpipe import storage
from odpipe.errors import UserError
from odpipe.records.plan import plan_path, read_plan
from odpipe.records.writer import write_shard

# Imported inside functions: Apache Beam (about a second) only when a Beam pipeline is built.

COUNTER_NAMESPACE = "odpipe.records"
_DATAFLOW_REQUIRED = ("project", "region", "temp_location")


def report_path(folder: str, shard: int) -> str:
    return storage.join(folder, f"report-{shard:05d}.json")


class _WriteShardFn(beam.DoFn):
    """Shard id -> the shard's TFRecord file and its report (JSON) under `folder`; outputs the report."""

    def __init__(self, images_dir: str, folder: str, num_shards: int, verify: str = "pixels"):
        self._images_dir, self._folder, self._num_shards, self._verify = images_dir, folder, num_shards, verify

    def process(self, shard: int):
        from odpipe import schema

        path = schema.shard_path(storage.join(self._folder, "part"), shard, self._num_shards)
        report = write_shard(read_plan(plan_path(self._folder, shard)), self._images_dir, path, self._verify)
        report = dict(report, shard=shard, path=path, conversions=dict(report["conversions"]))
        counter = lambda name: beam.metrics.Metrics.counter(COUNTER_NAMESPACE, name)  # noqa: E731
        counter("images_written").inc(report["images"])
        counter("objects_written").inc(report["objects"])
        counter("images_rejected").inc(len(report["rejected"]))
        counter("images_repaired").inc(len(report["repaired"]))
        storage.write_text(report_path(self._folder, shard), json.dumps(report, ensure_ascii=False))
        yield report


@beam.ptransform_fn
def ShardIds(pbegin, num_shards: int):  # noqa: N802 - Beam transform naming
    """0..num_shards-1, spread over the workers (Reshuffle: one shard per work item)."""
    return pbegin | "Create" >> beam.Create(list(range(num_shards))) | "Spread" >> beam.Reshuffle()


@beam.ptransform_fn
def WriteShards(shard_ids, images_dir: str, folder: str, num_shards: int, verify: str = "pixels"):  # noqa: N802
    """Shard ids (plans in `folder`, see `plan.write_plans`) -> `folder/part-SSSSS-of-NNNNN.tfrecord` files;
    a PCollection of the shard reports."""
    return shard_ids | "WriteShard" >> beam.ParDo(_WriteShardFn(images_dir, folder, num_shards, verify))


def build_pipeline_options(runner: str = "DirectRunner", beam_args: list[str] | None = None):
    """PipelineOptions for `runner` + pass-through Beam flags; Dataflow needs --project, --region
    and --temp_location (UserError otherwise)."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

    options = PipelineOptions(["--runner", runner, *(beam_args or [])])
    if runner in ("DataflowRunner", "dataflow"):
        gco = options.view_as(GoogleCloudOptions)
        missing = [f"--{name}" for name in _DATAFLOW_REQUIRED if not getattr(gco, name)]
        if missing:
            raise UserError(
                f"--runner {runner} needs {', '.join(missing)}; pass them (e.g. --project P --region us-central1 "
                "--temp_location gs://BUCKET/tmp --sdk_container_image IMAGE)"
            )
    return options


def _interrupted(err: BaseException) -> bool:
    seen = 0
    while err is not None and seen < 20:
        if isinstance(err, KeyboardInterrupt) or str(err).startswith("KeyboardInterrupt"):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def dataflow_job(result, options) -> dict:
    """{"dataflow_job_id", "dataflow_console_url"} of a pipeline launched on Dataflow; {} for any
    other runner (or a Dataflow template run, which has no job)."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions
    from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult

    if not isinstance(result, DataflowPipelineResult) or not result.has_job:
        return {}
    gco = options.view_as(GoogleCloudOptions)
    job_id = result.job_id()
    return {"dataflow_job_id": job_id,
            "dataflow_console_url": f"https://console.cloud.google.com/dataflow/jobs/{gco.region}/{job_id}"
                                    f"?project={gco.project}"}


def write_beam(num_shards: int, folder: str, images_dir: str, verify: str, options,
               launched: dict | None = None) -> list[dict]:
    """Run the pipeline over the shards planned in `folder` (`plan.write_plans`); the shard reports.
    A Dataflow job's id and console page are printed as soon as it is launched (the step's log
    links to it) and put in `launched`."""
    try:
        pipeline = beam.Pipeline(options=options)
        _ = pipeline | "ShardIds" >> ShardIds(num_shards) | "WriteShards" >> WriteShards(
            images_dir, folder, num_shards, verify)
        result = pipeline.run()
        job = dataflow_job(result, options)
        if job:
            print(f"Dataflow job {job['dataflow_job_id']} launched: {job['dataflow_console_url']}", flush=True)
            (launched if launched is not None else {}).update(job)
        result.wait_until_finish()
    except Exception as err:
        if _interrupted(err):  # Ctrl-C inside a DoFn reaches us wrapped in the runner's RuntimeError
            raise KeyboardInterrupt from None
        raise
    return [json.loads(storage.read_text(report_path(folder, shard))) for shard in range(num_shards)]
