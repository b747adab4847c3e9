"""A records task on Dataflow names its job: id and console page printed when it is launched and
kept in the artifact's metadata. The Dataflow service is faked at the PipelineResult level: the
pipeline runs for real on the DirectRunner, and the result is Beam's DataflowPipelineResult."""

from __future__ import annotations

import types

from odpipe.tasks.data import records_task

JOB_ID = "2026-12-07_05_00_00-4711"


def test_records_task_prints_and_records_the_dataflow_job(tmp_path, monkeypatch, capsys):
    from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult, DataflowRunner
    from apache_beam.runners.direct.direct_runner import DirectRunner

    from odpipe.annotations import xml_to_csv
    from odpipe.label_map import write_label_map
    from odpipe.sample_data import write_sample_data
    from odpipe.split import split_csv

    class Launched(DataflowPipelineResult):
        def wait_until_finish(self, duration=None):
            return "DONE"

    def run_pipeline(self, pipeline, options):  # the service: runs the pipeline here, answers like Dataflow
        DirectRunner().run_pipeline(pipeline, options).wait_until_finish()
        return Launched(types.SimpleNamespace(id=JOB_ID), self, options)

    from apache_beam.options.pipeline_options import GoogleCloudOptions

    monkeypatch.setattr(DataflowRunner, "run_pipeline", run_pipeline)
    # the options validator asks Cloud Storage about the temp bucket's soft-delete policy: offline here
    monkeypatch.setattr(GoogleCloudOptions, "_warn_if_soft_delete_policy_enabled", lambda self, arg: None)
    write_sample_data(str(tmp_path / "d"), images=6, seed=2)
    xml_to_csv(str(tmp_path / "d" / "annotations"), str(tmp_path / "labels.csv"), images_dir=str(tmp_path / "d" / "images"))
    split_csv(str(tmp_path / "labels.csv"), str(tmp_path / "split"), eval_fraction=0.34, seed=0)
    write_label_map(str(tmp_path / "labels.csv"), str(tmp_path / "label_map.pbtxt"))
    result = records_task(str(tmp_path / "split"), str(tmp_path / "label_map.pbtxt"), str(tmp_path / "d" / "images"),
                          str(tmp_path / "records"), side="train", shards=1, runner="DataflowRunner",
                          beam_args=["--project=data-proj", "--region=europe-west4", "--temp_location=gs://odpipe-test-bucket/tmp"],
                          dataflow_image="eu.gcr.io/p/odpipe:1")
    url = f"https://console.cloud.google.com/dataflow/jobs/europe-west4/{JOB_ID}?project=data-proj"
    assert f"Dataflow job {JOB_ID} launched: {url}" in capsys.readouterr().out
    meta = result.metadata["records"]
    assert meta["dataflow_job_id"] == JOB_ID and meta["dataflow_console_url"] == url
    assert meta["runner"] == "DataflowRunner" and meta["images"] >= 3  # the shards were written


def test_no_dataflow_job_on_the_direct_runner(tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.runner import PipelineResult

    from odpipe.records.transforms import dataflow_job

    assert dataflow_job(PipelineResult("DONE"), PipelineOptions([])) == {}
