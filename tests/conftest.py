"""Shared fixtures: the data flow of the pipeline, built once per test session on tiny data.

sample_dir -> labels_csv -> split_dir -> label_map_path -> records -> model_dir -> export_dir

Stage-specific fixtures live in the `fixture_*.py` plugin modules listed below.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Never look for a GCE metadata server (it is not there; any probe must stay on loopback and fail fast).
os.environ["NO_GCE_CHECK"] = "True"
os.environ["GCE_METADATA_HOST"] = "127.0.0.1:9"
os.environ["GCE_METADATA_IP"] = "127.0.0.1:9"

pytest_plugins = ["fixture_gcs", "fixture_model"]

SAMPLE_IMAGES = 24


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory):
    """A small generated labelImg dataset: images/ and annotations/."""
    from odpipe.sample_data import write_sample_data

    out = tmp_path_factory.mktemp("sample")
    write_sample_data(str(out), images=SAMPLE_IMAGES, seed=0)
    return out


@pytest.fixture(scope="session")
def labels_csv(sample_dir, tmp_path_factory):
    from odpipe.annotations import xml_to_csv

    out = tmp_path_factory.mktemp("labels") / "labels.csv"
    xml_to_csv(str(sample_dir / "annotations"), str(out), images_dir=str(sample_dir / "images"))
    return out


@pytest.fixture(scope="session")
def split_dir(labels_csv, tmp_path_factory):
    from odpipe.split import split_csv

    out = tmp_path_factory.mktemp("split")
    split_csv(str(labels_csv), str(out), eval_fraction=0.25, seed=0)
    return out


@pytest.fixture(scope="session")
def label_map_path(labels_csv, tmp_path_factory):
    from odpipe.label_map import write_label_map

    out = tmp_path_factory.mktemp("labelmap") / "label_map.pbtxt"
    write_label_map(str(labels_csv), str(out))
    return out


@pytest.fixture(scope="session")
def records(sample_dir, split_dir, label_map_path, tmp_path_factory):
    """{"train": pattern, "eval": pattern} of TFRecords written by the Beam stage."""
    from odpipe.records import convert

    out = tmp_path_factory.mktemp("records")
    patterns = {}
    for side in ("train", "eval"):
        prefix = str(out / side)
        convert(str(split_dir / f"{side}.csv"), str(sample_dir / "images"), str(label_map_path), prefix, shards=2)
        patterns[side] = prefix + "-*.tfrecord"
    return patterns
