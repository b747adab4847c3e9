"""Export folders are complete or absent, and the stages that read them refuse anything else:
re-export into an existing -o, a failed int8 export, a folder without export.json, a file as -o, a
label_map.pbtxt that is not the model's; evaluate's flags and its stderr; predict's image rule."""

from __future__ import annotations

import io
import json
import os
import shutil

import pytest
from PIL import Image

from odpipe.errors import UserError


def _siblings(folder) -> list[str]:
    return sorted(os.listdir(os.path.dirname(str(folder))))


@pytest.fixture(scope="module")
def reexported(model_dir, tmp_path_factory):
    """An export with a float model.tflite, exported again into the same folder without --tflite."""
    from odpipe.export import export_model

    out = tmp_path_factory.mktemp("reexport") / "exp"
    export_model(str(model_dir), str(out), checkpoint="best", tflite=True)
    assert (out / "model.tflite").is_file()
    summary = export_model(str(model_dir), str(out), checkpoint="latest")
    return out, summary


def test_reexport_replaces_the_whole_folder(reexported):
    """The int8/float model.tflite of the previous export must not ship beside the new SavedModel."""
    out, summary = reexported
    doc = json.loads((out / "export.json").read_text())
    assert doc == summary and doc["tflite"] is None and doc["checkpoint_choice"] == "latest"
    assert doc["export_dir"] == str(out) and doc["saved_model"] == f"{out}/saved_model"
    assert not (out / "model.tflite").exists()
    assert _siblings(out) == ["exp"]  # no staging or old folder left behind


def test_a_failed_int8_export_leaves_the_previous_export_untouched(model_dir, export_dir, tmp_path):
    from odpipe.export import export_model

    out = tmp_path / "exp"
    shutil.copytree(export_dir, out)
    before = {p: (out / p).read_bytes() for p in ("export.json", "model.tflite", "saved_model/saved_model.pb")}
    stamp = os.stat(out / "saved_model" / "saved_model.pb").st_mtime_ns
    junk = tmp_path / "junk.tfrecord"
    junk.write_bytes(b"junk calibration file")
    with pytest.raises(UserError, match="junk.tfrecord"):
        export_model(str(model_dir), str(out), tflite="int8", calibration_records=str(junk))
    assert {p: (out / p).read_bytes() for p in before} == before
    assert os.stat(out / "saved_model" / "saved_model.pb").st_mtime_ns == stamp
    assert _siblings(out) == ["exp", "junk.tfrecord"]


def test_an_export_without_export_json_is_refused_by_evaluate_and_predict(export_dir, records, sample_dir, tmp_path, capsys):
    from odpipe.cli import main
    from odpipe.export import check_export

    partial = tmp_path / "partial"
    shutil.copytree(export_dir, partial)
    os.remove(partial / "export.json")  # what a failed int8 export left behind before
    with pytest.raises(UserError, match=r"partial: not a complete export \(no export.json"):
        check_export(str(partial))
    check_export(str(export_dir))
    image = sorted((sample_dir / "images").glob("*.jpg"))[0]
    for argv in (["evaluate", "--model", str(partial), "--data", records["eval"], "-o", str(tmp_path / "r")],
                 ["evaluate", "--model", str(partial / "model.tflite"), "--data", records["eval"], "-o", str(tmp_path / "r")],
                 ["predict", "--model", str(partial), str(image), "-o", str(tmp_path / "p")]):
        rc = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "no export.json" in err[0] and "odpipe export" in err[0], err
    assert not (tmp_path / "r").exists()


def test_export_to_a_file_or_a_foreign_folder_is_one_line(model_dir, tmp_path, capsys):
    from odpipe.cli import main

    afile = tmp_path / "afile"
    afile.write_text("x")
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "keep.jpg").write_bytes(b"mine")
    for target, words in ((afile / "x", ("afile", "a file stands where a folder is needed")),
                          (afile, ("afile", "is a file")),
                          (foreign, ("photos", "not an odpipe export"))):
        rc = main(["export", "--model-dir", str(model_dir), "-o", str(target)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and all(w in err[0] for w in words), err
    assert afile.read_text() == "x" and (foreign / "keep.jpg").read_bytes() == b"mine"
    assert sorted(os.listdir(tmp_path)) == ["afile", "photos"]


def _swap_two_names(path) -> None:
    text = path.read_text()
    path.write_text(text.replace("'circle'", "'TMP'").replace("'square'", "'circle'").replace("'TMP'", "'square'"))


def test_a_label_map_that_is_not_the_models_is_refused(export_dir, records, tmp_path, capsys):
    """A swapped label_map.pbtxt beside the model relabelled every box silently (circle for square)."""
    from odpipe.cli import main
    from odpipe.detector import Detector

    wrong = tmp_path / "wrong"
    shutil.copytree(export_dir, wrong)
    _swap_two_names(wrong / "label_map.pbtxt")
    with pytest.raises(UserError, match=r"label_map.pbtxt: class id 1 is 'square' here but 'circle' inside the model"):
        Detector(str(wrong))
    lite = tmp_path / "lite"  # a model.tflite alone with a label map beside it: its metadata's labels decide
    lite.mkdir()
    shutil.copy(export_dir / "model.tflite", lite / "model.tflite")
    shutil.copy(wrong / "label_map.pbtxt", lite / "label_map.pbtxt")
    with pytest.raises(UserError, match=r"class id 1 is 'square' here but 'circle' inside the model .*labels.txt"):
        Detector(str(lite / "model.tflite"))
    rc = main(["evaluate", "--model", str(wrong), "--data", records["eval"], "-o", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "wrong/label_map.pbtxt" in err[0] and "in the records" not in err[0], err


def _foreign_records(path) -> None:
    """One record whose class 1 is 'hexagon' (records of another label map)."""
    import tensorflow as tf

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, format="JPEG")
    bl, il, fl = tf.train.BytesList, tf.train.Int64List, tf.train.FloatList
    feature = {
        "image/encoded": tf.train.Feature(bytes_list=bl(value=[buf.getvalue()])),
        "image/filename": tf.train.Feature(bytes_list=bl(value=[b"red.jpg"])),
        "image/width": tf.train.Feature(int64_list=il(value=[64])),
        "image/height": tf.train.Feature(int64_list=il(value=[48])),
        "image/object/class/label": tf.train.Feature(int64_list=il(value=[1])),
        "image/object/class/text": tf.train.Feature(bytes_list=bl(value=[b"hexagon"])),
        **{f"image/object/bbox/{k}": tf.train.Feature(float_list=fl(value=[v]))
           for k, v in (("xmin", 0.1), ("ymin", 0.1), ("xmax", 0.5), ("ymax", 0.6))},
    }
    with tf.io.TFRecordWriter(str(path)) as w:
        w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def test_evaluate_flags_and_a_one_line_stderr(export_dir, records, tmp_path, capsys):
    """--min-map outside [0, 1] and a missing --champion are refused naming their flag; an error raised
    while evaluating comes alone on stderr (no progress bar when stderr is not a terminal)."""
    from odpipe.cli import main

    base = ["evaluate", "--model", str(export_dir), "--data", records["eval"], "-o", str(tmp_path / "r")]
    for extra, words in ((["--min-map", "2"], ("--min-map 2.0", "between 0 and 1")),
                         (["--min-map", "-1"], ("--min-map -1.0", "between 0 and 1")),
                         (["--champion", str(tmp_path / "does/not/exist")], ("does/not/exist", "--champion"))):
        rc = main(base + extra)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and all(w in err[0] for w in words) and "--model" not in err[0], err
    _foreign_records(tmp_path / "eval-00000-of-00001.tfrecord")
    rc = main(["evaluate", "--model", str(export_dir), "--data", str(tmp_path / "eval-*.tfrecord"), "-o", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "'hexagon' in the records" in err[0], err


def test_predict_repairs_a_truncated_jpeg_like_the_records_stage(detector, sample_dir, tmp_path):
    """One rule for both: a JPEG that only lacks its end is repaired by `odpipe tfrecord`, so predict
    repairs it too (and says so) instead of listing it as unreadable."""
    from odpipe.predict import predict
    from odpipe.records.images import TRUNCATED_JPEG, prepare_image

    data = sorted((sample_dir / "images").glob("*.jpg"))[0].read_bytes()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    assert prepare_image(data[: len(data) * 2 // 3]).repaired == TRUNCATED_JPEG  # what tfrecord does
    summary = predict(detector, [str(tmp_path / "in")], str(tmp_path / "out"), threshold=0.0, progress=False)
    assert summary["images"] == 1 and not summary["unreadable"]
    assert summary["prepared"] == [{"file": str(tmp_path / "in" / "cut.jpg"), "image": f"repaired: {TRUNCATED_JPEG}"}]
    assert (tmp_path / "out" / "images" / "cut.jpg").is_file()


def test_swap_on_a_bucket_replaces_every_object_and_writes_export_json_last(gcs_bucket):
    """gs:// has no folder rename: the old objects go, the new ones are copied, export.json last."""
    from odpipe import storage
    from odpipe.export import _swap_in, check_export

    export_dir, staging = f"{gcs_bucket}/swap/exp", f"{gcs_bucket}/swap/.exp.partial-1"
    for rel, text in (("export.json", "old"), ("model.tflite", "old int8"), ("saved_model/saved_model.pb", "old")):
        storage.write_text(f"{export_dir}/{rel}", text)
    for rel, text in (("saved_model/saved_model.pb", "new"), ("label_map.pbtxt", "new"), ("export.json", "new")):
        storage.write_text(f"{staging}/{rel}", text)
    _swap_in(staging, export_dir)
    assert storage.list_files(export_dir) == ["export.json", "label_map.pbtxt", "saved_model/saved_model.pb"]
    assert {storage.read_text(f"{export_dir}/{f}") for f in storage.list_files(export_dir)} == {"new"}
    check_export(export_dir)
    storage.delete([f"{export_dir}/export.json"])
    with pytest.raises(UserError, match="no export.json"):
        check_export(export_dir)
