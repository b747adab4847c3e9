"""odpipe predict: input expansion, VOC conversion, and the whole stage on the real exported model
(export_dir fixture), including corrupt inputs, gs:// and a labelImg round trip through xml_to_csv."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from PIL import Image

from odpipe.detector import Detection
from odpipe.errors import UserError
from odpipe.predict import expand_inputs, voc_objects


def _touch_image(path, size=(40, 30), mode="RGB", fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new(mode, size, 128).save(path, format=fmt)


def test_expand_inputs_folders_globs_files(tmp_path):
    root = tmp_path / "in"
    _touch_image(str(root / "a.jpg"))
    _touch_image(str(root / "B.JPG"), fmt="JPEG")
    _touch_image(str(root / "sub" / "c.png"))
    _touch_image(str(root / "sub" / "a.jpg"))
    (root / "notes.txt").write_text("not an image")
    other = tmp_path / "other"
    _touch_image(str(other / "a.jpg"))
    _touch_image(str(other / "x.jpeg"))

    items = expand_inputs([str(root)])
    assert [name for _, name in items] == ["B", "a", "sub/a", "sub/c"]
    assert all(os.path.isfile(p) for p, _ in items)

    items = expand_inputs([str(root), str(other / "*.jp*g"), str(root / "a.jpg")])
    names = [name for _, name in items]
    assert names == ["B", "a", "sub/a", "sub/c", "a_1", "x"]  # clash suffixed, duplicate path once

    assert expand_inputs(str(root / "notes.txt"))[0][1] == "notes"  # named directly: kept, may be unreadable
    with pytest.raises(UserError, match="no such file or folder"):
        expand_inputs([str(tmp_path / "missing.jpg")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image matched"):
        expand_inputs([str(tmp_path / "empty"), str(tmp_path / "*.gif")])


def test_existing_paths_with_glob_characters_are_paths(tmp_path):
    """`predict 'photo[1].jpg'` predicts that file, not photo1.jpg; a folder `shots[1]` is walked."""
    _touch_image(str(tmp_path / "photo[1].jpg"))
    _touch_image(str(tmp_path / "photo1.jpg"))
    _touch_image(str(tmp_path / "shots[1]" / "a.jpg"))
    _touch_image(str(tmp_path / "shots1" / "b.jpg"))
    assert expand_inputs([str(tmp_path / "photo[1].jpg")]) == [(str(tmp_path / "photo[1].jpg"), "photo[1]")]
    assert expand_inputs([str(tmp_path / "shots[1]")]) == [(str(tmp_path / "shots[1]" / "a.jpg"), "a")]
    # a path that does not exist is a pattern: photo?.jpg matches both files
    assert [n for _, n in expand_inputs([str(tmp_path / "photo?.jpg")])] == ["photo1"]
    assert [n for _, n in expand_inputs([str(tmp_path / "photo*.jpg")])] == ["photo1", "photo[1]"]


def test_voc_objects_follow_labelimg():
    dets = [
        Detection(1, "circle", 0.9, (0.2, 0.4, 50.6, 29.9)),
        Detection(2, "square", 0.8, (10.2, 10.2, 10.4, 20.0)),  # under one pixel wide
        Detection(1, "circle", 0.7, (30.0, 5.0, 99.0, 60.0)),  # beyond the image
    ]
    objects, dropped = voc_objects(dets, width=64, height=30)
    assert objects == [("circle", (1, 1, 51, 30)), ("circle", (30, 5, 64, 30))]
    assert dropped == 1


def test_voc_files_read_back_by_xml_to_csv(tmp_path):
    """The XML predict writes is labelImg's format: `odpipe csv` reads back exactly its boxes."""
    from odpipe.annotations import read_labels_csv, xml_to_csv
    from odpipe.predict import _write_outputs

    images = tmp_path / "images"
    _touch_image(str(images / "photo.JPG"), size=(64, 48), fmt="JPEG")
    _touch_image(str(images / "nested" / "gray.png"), size=(30, 20), mode="L")
    dets = [Detection(2, "square", 0.9, (3.4, 5.6, 40.2, 47.9)), Detection(1, "café 1", 0.6, (0.0, 0.0, 12.0, 9.5))]
    out = tmp_path / "out"
    assert _write_outputs(str(out), str(images / "photo.JPG"), "photo", (images / "photo.JPG").read_bytes(),
                          64, 48, 3, dets, True, True) == 0
    assert _write_outputs(str(out), str(images / "nested" / "gray.png"), "nested/gray",
                          (images / "nested" / "gray.png").read_bytes(), 30, 20, 1, [], True, True) == 0
    with Image.open(out / "images" / "photo.jpg") as drawn:
        assert drawn.size == (64, 48)
    xml = (out / "annotations" / "nested" / "gray.xml").read_text()
    assert "<depth>1</depth>" in xml and "<filename>nested/gray.png</filename>" in xml
    xml_to_csv(str(out / "annotations"), str(tmp_path / "labels.csv"), images_dir=str(images), strict=True)
    frame = read_labels_csv(str(tmp_path / "labels.csv"))
    rows = sorted(
        (r["filename"], r["width"], r["height"], r["class"], r["xmin"], r["ymin"], r["xmax"], r["ymax"])
        for r in frame.to_dict("records") if r["class"]
    )
    assert rows == [("photo.JPG", 64, 48, "café 1", 1, 1, 12, 10), ("photo.JPG", 64, 48, "square", 3, 6, 40, 48)]
    assert set(frame["filename"]) == {"photo.JPG", "nested/gray.png"}


@pytest.fixture(scope="module")
def predict_inputs(sample_dir, tmp_path_factory):
    """Sample images plus the awkward cases: .JPG, grayscale, PNG in a subfolder, TIFF, an empty
    file, a text file named .jpg and a truncated JPEG."""
    root = tmp_path_factory.mktemp("predict_in")
    images = sorted(os.listdir(sample_dir / "images"))[:4]
    for name in images:
        shutil.copy(sample_dir / "images" / name, root / name)
    shutil.copy(sample_dir / "images" / images[0], root / "UPPER.JPG")
    Image.open(sample_dir / "images" / images[1]).convert("L").save(root / "gray.jpg")
    os.makedirs(root / "sub")
    Image.open(sample_dir / "images" / images[2]).save(root / "sub" / "rgb.png")
    Image.open(sample_dir / "images" / images[2]).save(root / "scan.tif")  # TF cannot decode TIFF: converted
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("hello")
    data = (sample_dir / "images" / images[3]).read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])
    return root


@pytest.fixture(scope="module")
def predicted(detector, predict_inputs, tmp_path_factory):
    from odpipe.predict import predict

    out = tmp_path_factory.mktemp("predict_out")
    summary = predict(detector, [str(predict_inputs)], str(out), threshold=0.0, voc=True, batch_size=4,
                      progress=False)
    return out, summary


def test_predict_end_to_end(predicted, predict_inputs):
    out, summary = predicted
    doc = json.loads((out / "predictions.json").read_text())
    bad = {os.path.basename(u["file"]) for u in summary["unreadable"]}
    assert bad == {"empty.jpg", "text.jpg"}  # counted and reported, not a crash
    # the records stage's rule: the truncated JPEG is repaired and the TIFF converted, each noted
    assert doc["images_found"] == 11 and summary["images"] == 9
    by_name = {p["output"]: p for p in doc["predictions"]}
    assert {"UPPER", "gray", "sub/rgb", "scan", "truncated"} <= set(by_name)
    assert by_name["truncated"]["image"].startswith("repaired: truncated JPEG")
    assert by_name["scan"]["image"].startswith("converted: tiff_") and "image" not in by_name["UPPER"]
    with Image.open(predict_inputs / "UPPER.JPG") as im:
        assert (by_name["UPPER"]["width"], by_name["UPPER"]["height"]) == im.size
    total = 0
    for p in doc["predictions"]:
        for d in p["detections"]:
            box = d["box"]
            assert 0 <= box["xmin"] <= box["xmax"] <= p["width"] and 0 <= box["ymin"] <= box["ymax"] <= p["height"]
            assert d["class"] in {"circle", "square", "triangle"} and 0.0 <= d["score"] <= 1.0
            total += 1
        scores = [d["score"] for d in p["detections"]]
        assert scores == sorted(scores, reverse=True)
        assert (out / "images" / f"{p['output']}.jpg").is_file()
        assert (out / "annotations" / f"{p['output']}.xml").is_file()
    assert total == summary["detections"]  # (the tiny fixture model may find nothing at all)


def test_predict_voc_round_trip_through_xml_to_csv(predicted, predict_inputs, tmp_path):
    from odpipe.annotations import read_labels_csv, xml_to_csv

    out, summary = predicted
    doc = json.loads((out / "predictions.json").read_text())
    csv = tmp_path / "labels.csv"
    report = xml_to_csv(str(out / "annotations"), str(csv), images_dir=str(predict_inputs))
    frame = read_labels_csv(str(csv))
    assert set(frame["filename"]) == {
        os.path.relpath(p["filename"], predict_inputs).replace(os.sep, "/") for p in doc["predictions"]
    }
    assert report["dropped"] == [] or not report["dropped"]
    kept = sum(len(p["detections"]) for p in doc["predictions"]) - summary["voc_boxes_dropped"]
    assert int((frame["class"] != "").sum()) == kept
    first = doc["predictions"][0]
    rows = frame[(frame["filename"] == os.path.basename(first["filename"])) & (frame["class"] != "")]
    for (_, row), d in zip(rows.iterrows(), first["detections"]):
        assert row["class"] == d["class"]
        assert abs(row["xmax"] - d["box"]["xmax"]) <= 1 and abs(row["ymax"] - d["box"]["ymax"]) <= 1


def test_predict_gs_in_and_out(detector, predict_inputs, gcs_bucket):
    from fixture_gcs import upload_dir

    from odpipe import storage
    from odpipe.predict import predict

    src = f"{gcs_bucket}/predict-in"
    upload_dir(str(predict_inputs / "sub"), src)
    summary = predict(detector, [src + "/", src + "/*.png"], f"{gcs_bucket}/predict-out", threshold=0.3, voc=True,
                      progress=False)
    assert summary["images"] == 1 and not summary["unreadable"]  # folder and glob name one object
    doc = json.loads(storage.read_text(f"{gcs_bucket}/predict-out/predictions.json"))
    assert doc["predictions"][0]["filename"] == f"{src}/rgb.png"
    assert storage.exists(f"{gcs_bucket}/predict-out/images/rgb.jpg")
    assert storage.exists(f"{gcs_bucket}/predict-out/annotations/rgb.xml")


def test_predict_cli_errors_are_one_line(export_dir, tmp_path, capsys):
    from odpipe.cli import main

    (tmp_path / "empty").mkdir()
    rc = main(["predict", "--model", str(export_dir), str(tmp_path / "empty"), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("odpipe predict: error: no image matched")
    _touch_image(str(tmp_path / "img.jpg"))
    rc = main(["predict", "--model", str(tmp_path), str(tmp_path / "img.jpg"), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "saved_model" in err[0]
