"""The Vertex AI / Kubeflow UI views of a run: the confusion matrix as KFP ClassificationMetrics and
the Markdown run summary, from the evaluate task on a real export and eval records."""

from __future__ import annotations

import os

from kfp.dsl import ClassificationMetrics, Markdown

from components import stages
from odpipe import run_summary
from odpipe.champion import Champion
from odpipe.tasks.model import evaluate_task


def test_summary_names_the_verdict_the_data_and_the_champion():
    result = {
        "blessed": False, "images": 12, "objects": 30, "mAP": 0.41, "mAP@0.5": 0.7, "mAP@0.75": 0.4, "recall": 0.5,
        "blessing": {"reasons": ["mAP 0.4100 < champion's 0.4500 + margin 0.0000"]},
        "champion": {"version": "0003", "mAP": 0.45, "mAP@0.5": 0.72, "mAP@0.75": None, "recall": 0.52},
        "per_class": {"raccoon": {"AP": 0.41, "AP@0.5": 0.7, "precision@threshold": 0.8, "recall@threshold": None,
                                  "ground_truth": 30}},
    }
    text = run_summary.markdown(result, {"images": 12, "objects": 30, "shards": 1}, "gs://b/home", "ab12")
    assert "**Not blessed**: nothing published" in text and "- mAP 0.4100 < champion's 0.4500" in text
    assert "| mAP (0.5:0.95) | 0.4100 | 0.4500 | -0.0400 |" in text
    assert "| mAP@0.75 | 0.4000 | n/a |  |" in text and "champion v0003" in text
    assert "| raccoon | 0.4100 | 0.7000 | 0.8000 | n/a | 30 |" in text
    assert "| eval records (1 shards) | 12 | 30 |" in text and "`ab12`" in text
    first = run_summary.markdown({**result, "blessed": True, "champion": None}, model_home="gs://b/home")
    assert "**Blessed**: published as the next version of `gs://b/home`" in first and "champion (none yet)" in first


def _records_artifact(records, folder):
    """The eval shards as a records artifact's folder (records-SSSSS-of-NNNNN.tfrecord)."""
    import glob
    import shutil

    os.makedirs(folder)
    for path in glob.glob(records["eval"]):
        shutil.copyfile(path, os.path.join(folder, "records" + os.path.basename(path)[len("eval"):]))
    return str(folder)


def test_evaluate_component_writes_the_confusion_matrix_and_the_summary(export_dir, records, tmp_path):
    from kfp.dsl import HTML, Dataset, Metrics, Model

    comps = stages.build("r.example/o:1", "r.example/g:1")
    eval_dir = _records_artifact(records, tmp_path / "eval")
    art = {name: kind(uri=str(tmp_path / name)) for name, kind in (
        ("metrics", Metrics), ("evaluation", Dataset), ("report", HTML), ("confusion", ClassificationMetrics),
        ("summary", Markdown))}
    champion = Dataset(uri=Champion.none().save(str(tmp_path / "champion")))  # a first run: none in service
    eval_records = Dataset(uri=eval_dir, metadata={"images": 6, "shards": 2})
    comps.evaluate.python_func(exported=Model(uri=str(export_dir)), eval_records=eval_records, champion=champion,
                               **art, fingerprint="fp1")
    matrix = art["confusion"].metadata["confusionMatrix"]
    labels = [spec["displayName"] for spec in matrix["annotationSpecs"]]
    assert labels[-1] == "background" and len(matrix["rows"]) == len(labels)
    assert all(len(row["row"]) == len(labels) for row in matrix["rows"])
    summary = open(art["summary"].path, encoding="utf-8").read()
    assert summary.startswith("# odpipe run summary") and "## Challenger vs champion" in summary
    assert "| eval records (2 shards) | 6 |" in summary and "`fp1`" in summary


def test_evaluate_task_without_a_summary_path_writes_none(export_dir, records, tmp_path):
    result = evaluate_task(str(export_dir), _records_artifact(records, tmp_path / "eval"), str(tmp_path / "ev"),
                           str(tmp_path / "r.html"))
    assert "confusionMatrix" in result.metadata["confusion"] and not list(tmp_path.glob("*.md"))
