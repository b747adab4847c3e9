"""The pipeline's task functions (odpipe.tasks): the rules the components used to hold, on their own."""

from __future__ import annotations

import os
import time

import pytest
from kfp.dsl import Dataset

from odpipe.champion import Champion
from odpipe.errors import UserError
from odpipe.tasks import Result, at, record
from odpipe.tasks.data import label_map_task, records_pattern
from odpipe.tasks.model import USER_ERROR_FILE, start_of, train_task


def test_where_an_artifact_is_read_and_written():
    vertex = Dataset(uri="gs://bucket/root/run/split/splits")
    assert at(vertex) == "gs://bucket/root/run/split/splits"  # Beam, Dataflow and TensorFlow speak gs://
    kubeflow = Dataset(uri="minio://mlpipeline/v2/artifacts/run/split/splits")
    assert at(kubeflow) == "/minio/mlpipeline/v2/artifacts/run/split/splits"  # the launcher's local copy
    s3 = Dataset(uri="s3://bucket/run/splits")
    assert at(s3) == "/s3/bucket/run/splits"
    local = Dataset(uri="/tmp/runs/split/splits")
    assert at(local) == "/tmp/runs/split/splits"


def test_record_copies_metadata_and_returns_the_value():
    a, b = Dataset(uri="/x/a"), Dataset(uri="/x/b")
    assert record(Result({"a": {"n": 1, "path": os.path.join("p", "q")}, "b": {}}, 7), a=a, b=b) == 7
    assert a.metadata == {"n": 1, "path": "p/q"} and b.metadata == {}
    assert records_pattern("gs://b/run/records/") == "gs://b/run/records/records-*.tfrecord"


def test_warm_start_wins_over_the_start_checkpoint(tmp_path, capsys):
    """Issue 15: --warm-start with --init-checkpoint none silently started from random weights."""
    version = tmp_path / "home" / "versions" / "0001"
    (version / "checkpoint").mkdir(parents=True)
    label_map = 'item {\n  id: 1\n  name: "cat"\n}\n'
    (version / "label_map.pbtxt").write_text(label_map)
    (tmp_path / "new.pbtxt").write_text(label_map)
    champ = Champion(version="0001", checkpoint=str(version / "checkpoint" / "ckpt-9"),
                     label_map=str(version / "label_map.pbtxt"))
    init, options = start_of("none", True, champ, str(tmp_path / "new.pbtxt"))
    assert init == champ.checkpoint and options == {"init_checkpoint_modules": "all"}
    assert "instead of --init-checkpoint none" in capsys.readouterr().out
    assert start_of("none", True, Champion.none(), str(tmp_path / "new.pbtxt")) == ("none", {})
    assert "no model in service yet" in capsys.readouterr().out
    assert start_of("default", False, champ, str(tmp_path / "new.pbtxt")) == ("default", {})


def test_the_label_map_keeps_the_champions_ids(labels_csv, tmp_path):
    old = tmp_path / "champ.pbtxt"
    old.write_text('item {\n  id: 5\n  name: "square"\n}\n')
    Champion(version="0003", label_map=str(old)).save(str(tmp_path / "champion.json"))
    result = label_map_task(str(labels_csv), str(tmp_path / "lm.pbtxt"), champion=str(tmp_path / "champion.json"))
    assert result.metadata["label_map"]["classes"]["5"] == "square"
    assert result.metadata["label_map"]["extended_from"] == str(old)
    given = tmp_path / "given.pbtxt"
    given.write_text('item {\n  id: 9\n  name: "square"\n}\n')
    result = label_map_task(str(labels_csv), str(tmp_path / "lm2.pbtxt"), str(given), str(tmp_path / "champion.json"))
    assert result.metadata["label_map"]["classes"]["9"] == "square"  # an explicit label map wins


def test_a_retried_trainer_fails_at_once_on_a_user_error(tmp_path, label_map_path):
    """A retry is for preemption: the user error of the first attempt is kept and repeated in seconds."""
    empty = tmp_path / "records"
    empty.mkdir()
    model_dir = tmp_path / "model"
    with pytest.raises(UserError) as first:
        train_task(str(empty), str(empty), str(label_map_path), str(model_dir), init_checkpoint="none", steps=2)
    assert (model_dir / USER_ERROR_FILE).read_text().strip() == str(first.value)
    start = time.monotonic()
    with pytest.raises(UserError, match="as in the first attempt; a retry cannot fix it"):
        train_task(str(empty), str(empty), str(label_map_path), str(model_dir), init_checkpoint="none", steps=2)
    assert time.monotonic() - start < 5
