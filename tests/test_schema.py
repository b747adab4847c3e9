"""odpipe.schema: the record contract (keys, encoder, parser) and the record file layout."""

from __future__ import annotations

import pytest

from odpipe import schema
from odpipe.errors import UserError


def _values():
    values = {key: [] for key in schema.FEATURES}
    values.update({
        schema.ENCODED: [bytes(range(256)) * 600], schema.FORMAT: ["jpeg"], schema.HEIGHT: [48], schema.WIDTH: [64],
        schema.FILENAME: ["sub/é.jpg"], schema.SOURCE_ID: ["12345"], schema.SHA256: ["ab" * 32],
        schema.XMIN: [0.25, 0.0], schema.YMIN: [0.5, 0.1], schema.XMAX: [1.0, 0.3], schema.YMAX: [0.75, 0.2],
        schema.CLASS_TEXT: ["q" * 2000, "dog"], schema.CLASS_LABEL: [1, 300], schema.AREA: [10.5, 2.0],
        schema.IS_CROWD: [0, 0], schema.DIFFICULT: [0, 1], schema.TRUNCATED: [-2, 1],
    })
    return values


def test_encoder_matches_tensorflow_byte_for_byte():
    """The writer's Example class (no TensorFlow import) serializes exactly as tf.train.Example."""
    import tensorflow as tf

    values = _values()
    reference = tf.train.Example()
    for key, kind in schema.FEATURES.items():
        getattr(reference.features.feature[key], f"{kind}_list").value.extend(
            [v.encode() if isinstance(v, str) else v for v in values[key]])
    assert schema.encode_example(values) == reference.SerializeToString(deterministic=True)
    empty = dict(values, **{k: [] for k in schema.OBJECT_KEYS})
    parsed = tf.train.Example.FromString(schema.encode_example(empty))
    assert set(parsed.features.feature) == set(schema.FEATURES)  # every key present, object lists empty


def test_parse_example_round_trip_and_bad_payloads():
    values = _values()
    rec = schema.parse_example(schema.encode_example(values))
    assert rec["filename"] == "sub/é.jpg" and rec["width"] == 64 and rec["height"] == 48
    assert rec["encoded"] == values[schema.ENCODED][0] and rec["labels"] == [1, 300]
    assert rec["classes"] == values[schema.CLASS_TEXT] and rec["xmin"] == [0.25, 0.0]
    assert rec["keys"] == sorted(schema.FEATURES)
    with pytest.raises(UserError, match=r"^x.tfrecord: a record is not a tf.train.Example"):
        schema.parse_example(b"\xff\xff\xff", "x.tfrecord")
    with pytest.raises(UserError, match="has no image/encoded"):
        schema.parse_example(b"", "x.tfrecord")


def test_file_layout():
    assert schema.shard_path("r/train", 3, 12) == "r/train-00003-of-00012.tfrecord"
    assert schema.summary_path("r/train") == "r/train.summary.json"
    for pattern in ("r/train-*.tfrecord", "r/train-*-of-*.tfrecord", "r/train-00001-of-00002.tfrecord"):
        assert schema.prefix_of(pattern) == "r/train"
    assert schema.prefix_of("r/*.tfrecord") is None


def test_csv_columns_are_the_annotations_columns():
    from odpipe import annotations

    assert annotations.CSV_COLUMNS is schema.CSV_COLUMNS


def test_read_labels_without_pandas(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text("\ufefffilename,width,height,class,xmin,ymin,xmax,ymax\n"
                    "a.jpg,10,8,NA,1,2,5.5,6\n\"b,c.jpg\",12.0,9,,,,,\n", encoding="utf-8")
    cols = schema.read_labels(str(path))
    assert cols["filename"] == ["a.jpg", "b,c.jpg"] and cols["class"] == ["NA", ""]
    assert cols["width"] == [10, 12] and cols["xmax"][0] == 5.5 and cols["xmin"][1] != cols["xmin"][1]  # NaN
    assert cols["difficult"] == [0, 0] and cols["truncated"] == [0, 0]
    for body, message in (("a.jpg,10,8,cat,1,2,x,6\n", "line 2: could not convert"),
                          ("a.jpg,10,8,cat,,,,\n", r"line 2 \(a.jpg\) has a class without a box"),
                          ("a.jpg,10,8,cat,1,2,3,4,0,0,extra\n", "expected 8 fields in line 2, saw 11")):
        path.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\n" + body, encoding="utf-8")
        with pytest.raises(UserError, match=message):
            schema.read_labels(str(path))
    path.write_text("", encoding="utf-8")
    with pytest.raises(UserError, match="CSV is empty"):
        schema.read_labels(str(path))
