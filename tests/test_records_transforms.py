"""The records stage's Beam transforms on the DirectRunner (TestPipeline + assert_that), and the
TFRecord framing pinned against TensorFlow's writer and readers."""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from odpipe.records import plan as planning
from odpipe.records import tfrecord


def _jpeg(width, height, seed):
    arr = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, "JPEG")
    return buf.getvalue()


def test_write_shards_transform(tmp_path):
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from odpipe.records.transforms import ShardIds, WriteShards

    images = tmp_path / "images"
    images.mkdir()
    items = []
    for i in range(5):
        name = f"im{i}.jpg"
        if i != 3:
            (images / name).write_bytes(_jpeg(16 + i, 12, i))
        items.append({"filename": name, "width": 16 + i, "height": 12, "source_id": i + 1,
                      "objects": [{"class": "cat", "label": 1, "xmin": 0.1, "ymin": 0.1, "xmax": 0.5, "ymax": 0.5,
                                   "area": 4.0, "difficult": 0, "truncated": 0}]})
    folder = str(tmp_path / "work")
    os.makedirs(folder)
    planning.write_plans(items, folder, 2)
    with TestPipeline(options=beam.options.pipeline_options.PipelineOptions(["--direct_running_mode=in_memory"])) as p:
        reports = p | ShardIds(2) | WriteShards(str(images), folder, 2)
        summary = reports | beam.Map(lambda r: (r["shard"], r["images"], [x["file"] for x in r["rejected"]]))
        assert_that(summary, equal_to([(0, 3, []), (1, 1, ["im3.jpg"])]))
    import tensorflow as tf

    for shard, expected in ((0, ["im0.jpg", "im2.jpg", "im4.jpg"]), (1, ["im1.jpg"])):
        path = os.path.join(folder, f"part-{shard:05d}-of-00002.tfrecord")
        names = [tf.train.Example.FromString(r).features.feature["image/filename"].bytes_list.value[0].decode()
                 for r in tf.data.TFRecordDataset(path).as_numpy_iterator()]
        assert names == expected


def test_framing_is_tensorflows(tmp_path):
    """Our writer's bytes equal tf.io.TFRecordWriter's; TensorFlow's reader reads them back."""
    import tensorflow as tf

    payloads = [b"", b"a", b"\x00" * 1000, "é".encode(), bytes(range(256)) * 300]
    ours, theirs = tmp_path / "ours.tfrecord", tmp_path / "theirs.tfrecord"
    with open(ours, "wb") as f:
        writer = tfrecord.RecordWriter(f)
        for p in payloads:
            writer.write(p)
    with tf.io.TFRecordWriter(str(theirs)) as w:
        for p in payloads:
            w.write(p)
    assert ours.read_bytes() == theirs.read_bytes()
    assert list(tfrecord.read_records(str(ours))) == payloads
