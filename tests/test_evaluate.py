"""odpipe evaluate: COCO metrics on hand-computed cases, confusion matrix, blessing, report,
and the whole stage on the real exported model (export_dir fixture)."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from odpipe.detector import Detection
from odpipe.errors import UserError
from odpipe.evaluate import (
    EvalImage,
    GroundTruth,
    bless,
    coco_metrics,
    confusion_matrix,
    iou_matrix,
)

LABELS = {1: "circle", 2: "square", 3: "triangle"}


def det(class_id, box, score=0.9):
    return Detection(class_id, LABELS.get(class_id, f"id:{class_id}"), score, tuple(float(v) for v in box))


def image(i, gts, dets=()):
    return EvalImage(i, f"img{i}.jpg", 200, 100, [GroundTruth(c, tuple(map(float, b)), ign) for c, b, ign in gts], list(dets))


def _gt_set():
    return [
        image(1, [(1, (10, 10, 50, 50), False), (2, (60, 10, 120, 90), False)]),
        image(2, [(2, (0, 0, 30, 40), False), (3, (100, 20, 190, 95), False)]),
        image(3, []),  # an image without objects
    ]


def test_perfect_detections_give_map_one():
    images = _gt_set()
    for im in images:
        im.detections = [det(g.class_id, g.box, 0.8) for g in im.ground_truth]
    m = coco_metrics(images, LABELS)
    assert m["stats"]["mAP"] == pytest.approx(1.0)
    assert m["stats"]["mAP@0.5"] == pytest.approx(1.0)
    assert m["stats"]["AR@100"] == pytest.approx(1.0)
    for name in LABELS.values():
        assert m["per_class"][name]["AP"] == pytest.approx(1.0)
        assert m["per_class"][name]["AP@0.5"] == pytest.approx(1.0)
    json.dumps(m)  # plain Python numbers only (no numpy scalars)


def test_no_detections_give_zero():
    m = coco_metrics(_gt_set(), LABELS)
    assert m["stats"]["mAP"] == 0.0 and m["stats"]["mAP@0.5"] == 0.0 and m["stats"]["AR@100"] == 0.0
    assert all(pc["AP"] == 0.0 for pc in m["per_class"].values())


def test_hand_computed_ap_one_hit_one_false_alarm_one_miss():
    # two circles; detections: a perfect hit (0.9) then a false alarm (0.8); the second circle missed.
    # precision/recall: (1.0, 0.5) then (0.5, 0.5): interpolated precision is 1 for recall <= 0.5 and 0
    # above, so AP = 51 of COCO's 101 recall points, at every IoU threshold (the hit is exact).
    im = image(1, [(1, (10, 10, 50, 50), False), (1, (100, 10, 150, 60), False)],
               [det(1, (10, 10, 50, 50), 0.9), det(1, (60, 60, 90, 95), 0.8)])
    m = coco_metrics([im], {1: "circle"})
    assert m["stats"]["mAP"] == pytest.approx(51 / 101)
    assert m["per_class"]["circle"]["AP@0.5"] == pytest.approx(51 / 101)
    assert m["stats"]["AR@100"] == pytest.approx(0.5)
    recall, precision = m["pr_curves"]["circle"]
    assert precision[50] == pytest.approx(1.0) and precision[51] == 0.0


def test_iou_threshold_and_class_without_ground_truth():
    # IoU of the detection with its box is 0.62: a hit at IoU 0.5, 0.55, 0.6, a miss from 0.65 up.
    gt_box, det_box = (0, 0, 100, 62), (0, 0, 100, 100)
    assert iou_matrix([gt_box], [det_box])[0, 0] == pytest.approx(0.62)
    im = image(1, [(1, gt_box, False)], [det(1, det_box, 0.9), det(3, (150, 0, 190, 40), 0.7)])
    m = coco_metrics([im], LABELS)
    assert m["per_class"]["circle"]["AP@0.5"] == pytest.approx(1.0)
    assert m["per_class"]["circle"]["AP@0.75"] == 0.0
    assert m["per_class"]["circle"]["AP"] == pytest.approx(0.3)  # 3 of 10 IoU thresholds
    assert m["per_class"]["square"]["AP"] is None  # no ground truth: undefined, not 0
    assert m["per_class"]["triangle"]["AP"] is None
    assert m["stats"]["mAP"] == pytest.approx(0.3)  # the mean leaves undefined classes out


def test_difficult_objects_neither_needed_nor_punished():
    gts = [(1, (10, 10, 50, 50), False), (2, (60, 10, 120, 90), True)]
    missed = image(1, gts, [det(1, (10, 10, 50, 50))])
    found = image(1, gts, [det(1, (10, 10, 50, 50)), det(2, (60, 10, 120, 90), 0.95)])
    for im in (missed, found):
        m = coco_metrics([im], LABELS)
        assert m["stats"]["mAP"] == pytest.approx(1.0)
        assert m["per_class"]["square"]["ignored_ground_truth"] == 1
    cm = confusion_matrix([found], LABELS)
    assert cm.sum() == 1 and cm[0, 0] == 1  # the detection on the difficult square is ignored


def test_confusion_matrix_cells():
    im = image(1, [(1, (10, 10, 50, 50), False), (2, (60, 10, 120, 90), False), (3, (130, 10, 190, 90), False)], [
        det(2, (10, 10, 50, 50), 0.9),      # circle found as square -> (circle, square)
        det(2, (60, 10, 120, 90), 0.9),     # square right -> (square, square)
        det(1, (0, 60, 20, 99), 0.8),       # nothing there -> (background, circle)
        det(3, (130, 10, 190, 90), 0.3),    # below the score threshold: triangle missed
    ])
    cm = confusion_matrix([im], LABELS, score_threshold=0.5)
    expected = np.zeros((4, 4), dtype=int)
    expected[0, 1] = expected[1, 1] = expected[3, 0] = expected[2, 3] = 1
    np.testing.assert_array_equal(cm, expected)


def test_confusion_matrix_prefers_the_right_class():
    # a wrong-class box overlaps more than the right-class one: the right one is the match and
    # the wrong one a false alarm (not a confusion plus a false alarm of the right class).
    im = image(1, [(1, (10, 10, 50, 50), False)], [det(2, (10, 10, 50, 50), 0.9), det(1, (12, 12, 50, 50), 0.8)])
    cm = confusion_matrix([im], LABELS)
    assert cm[0, 0] == 1 and cm[3, 1] == 1 and cm.sum() == 2


def test_bless_rules():
    ok, reasons = bless(0.4)
    assert ok and "blessed by default" in reasons[0]
    assert bless(0.5, min_map=0.5)[0] is True
    ok, reasons = bless(0.49, min_map=0.5)
    assert not ok and "< --min-map" in reasons[0]
    assert bless(0.6, champion={"mAP": 0.6})[0] is True
    ok, reasons = bless(0.59, champion={"mAP": 0.6, "version": "0003"})
    assert not ok and "< the champion's (0003) 0.6000" in reasons[0] and "same eval records" in reasons[0]
    ok, reasons = bless(0.7, min_map=0.5, champion={"mAP": 0.8})
    assert not ok and len(reasons) == 2
    assert bless(0.7, champion={"mAP": None})[0] is True
    assert bless(0.61, champion={"mAP": 0.6}, margin=0.02)[0] is False  # must beat it by the margin
    assert bless(0.62, champion={"mAP": 0.6}, margin=0.02)[0] is True
    assert bless(None)[0] is False
    assert bless(0.9, min_map=1.01)[0] is False


def test_tfrecord_framing_matches_tensorflow(tmp_path):
    """The reader evaluate uses for gs:// records (odpipe.inspect_records.read_record_file)."""
    import tensorflow as tf

    from odpipe.inspect_records import read_record_file

    path = str(tmp_path / "x.tfrecord")
    payloads = [b"", b"a", b"\x00" * 1000, "é".encode()]
    with tf.io.TFRecordWriter(path) as w:
        for p in payloads:
            w.write(p)
    assert list(read_record_file(path)) == payloads
    with open(path, "rb") as f:
        (tmp_path / "truncated.tfrecord").write_bytes(f.read()[:-3])
    with pytest.raises(UserError, match="truncated.tfrecord: corrupt TFRecord"):
        list(read_record_file(str(tmp_path / "truncated.tfrecord")))


def test_report_html_is_self_contained():
    from odpipe import report

    buf = io.BytesIO()
    Image.new("RGB", (200, 100), (30, 90, 200)).save(buf, format="JPEG")
    im = image(1, [(1, (10, 10, 50, 50), False)], [det(2, (10, 10, 50, 50), 0.9)])
    cm = confusion_matrix([im], LABELS)
    metrics = {
        "model": "m", "data": ["d"], "images": 1, "objects": 1, "ignored_objects": 0, "detections": 1,
        "skipped": [{"file": "x<y>.jpg", "reason": "bad"}], "blessed": False,
        "blessing": {"reasons": ["mAP 0.0000 < --min-map 0.5"]},
        "coco": coco_metrics([im], LABELS)["stats"], "per_class": coco_metrics([im], LABELS)["per_class"],
        "confusion_matrix": {"iou": 0.5, "score_threshold": 0.5, "labels": list(LABELS.values()) + ["background"],
                             "matrix": cm.tolist()},
    }
    gallery = [report.gallery_entry(im, buf.getvalue(), 2, 0.5, LABELS)]
    page = report.render_html(metrics, report.confusion_matrix_png(cm, metrics["confusion_matrix"]["labels"]),
                              report.pr_curves_png({}), gallery)
    assert page.count("data:image/png;base64,") == 2 and page.count("data:image/jpeg;base64,") == 1
    assert "x&lt;y&gt;.jpg" in page and "<script" not in page
    assert "src='http" not in page and 'src="http' not in page


# -- the real stage on the exported model ------------------------------------------------------


@pytest.fixture(scope="module")
def evaluated(detector, records, tmp_path_factory):
    from odpipe.evaluate import evaluate

    out = tmp_path_factory.mktemp("report")
    return out, evaluate(detector, records["eval"], str(out), progress=False)


def test_evaluate_end_to_end(evaluated, records):
    out, metrics = evaluated
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    for key in ("mAP", "mAP@0.5", "mAP@0.75", "recall"):
        assert metrics[key] is None or 0.0 <= metrics[key] <= 1.0
    assert metrics["mAP"] is not None  # the eval split has objects
    assert set(metrics["per_class"]) == {"circle", "square", "triangle"}
    summary = json.loads(open(records["eval"][: -len("-*.tfrecord")] + ".summary.json").read())
    assert metrics["images"] + len(metrics["skipped"]) == summary["images"]
    cm = np.array(metrics["confusion_matrix"]["matrix"])
    assert cm.shape == (4, 4) and cm[3, 3] == 0
    assert cm[:3].sum() == metrics["objects"]  # every object is matched or missed, exactly once
    for k, pc in enumerate(metrics["per_class"].values()):
        assert pc["recall@threshold"] == (cm[k, k] / cm[k].sum() if cm[k].sum() else None)
    assert metrics["blessed"] is True and "by default" in metrics["blessing"]["reasons"][0]
    for name in ("confusion_matrix.png", "pr_curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "data:image/jpeg;base64," in page
    assert page.count("class='card'") == metrics["images"]


def test_evaluate_cli_blessing_and_errors(evaluated, export_dir, records, tmp_path, capsys):
    """The champion is scored on the same records by the same code: the same model as its own
    champion gets identical figures, so a margin > 0 refuses it and margin 0 blesses it."""
    from odpipe.cli import main

    _, metrics = evaluated
    out = tmp_path / "r"
    rc = main(["evaluate", "--model", str(export_dir), "--data", records["eval"], "-o", str(out),
               "--min-map", "0", "--champion", str(export_dir), "--margin", "0.01", "--report-images", "2"])
    assert rc == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["champion"]["mAP"] == pytest.approx(doc["mAP"]) and doc["champion"]["mAP@0.5"] == pytest.approx(doc["mAP@0.5"])
    assert {n: pc["AP"] for n, pc in doc["champion"]["per_class"].items()} == pytest.approx(
        {n: pc["AP"] for n, pc in doc["per_class"].items()})
    assert doc["blessed"] is False and any("< the champion's" in r for r in doc["blessing"]["reasons"])
    assert doc["mAP"] == pytest.approx(metrics["mAP"])  # deterministic
    assert "Challenger vs champion" in (out / "report.html").read_text()
    assert "champion mAP" in capsys.readouterr().out
    rc = main(["evaluate", "--model", str(export_dir), "--data", records["eval"], "-o", str(out),
               "--champion", str(export_dir), "--report-images", "0"])
    assert rc == 0 and json.loads((out / "metrics.json").read_text())["blessed"] is True
    capsys.readouterr()
    rc = main(["evaluate", "--model", str(export_dir), "--data", str(tmp_path / "nothing-*.tfrecord"), "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no TFRecord file matches" in err[0]


def test_a_class_the_champion_never_saw_scores_ap_zero_for_it(export_dir, records, tmp_path):
    """A champion whose label map lacks a class (the data grew a new class since) is scored over
    the challenger's classes: that class is AP 0 for it, and its detections are matched by name."""
    import shutil

    from odpipe.evaluate import evaluate
    from odpipe.label_map import format_label_map, read_label_map

    champion = tmp_path / "champion"
    shutil.copytree(export_dir, champion)
    labels = read_label_map(str(champion / "label_map.pbtxt"))
    gone_id = max(labels)
    gone = labels.pop(gone_id)
    for where in ("label_map.pbtxt", "saved_model/assets/label_map.pbtxt"):  # beside and inside agree
        (champion / where).write_text(format_label_map(labels), encoding="utf-8")
    doc = evaluate(str(export_dir), records["eval"], str(tmp_path / "r"), champion=str(champion),
                   champion_version="0007", report_images=0, progress=False)
    champ = doc["champion"]
    assert champ["version"] == "0007" and champ["unseen_classes"] == [gone]
    if doc["per_class"][gone]["ground_truth"]:
        assert champ["per_class"][gone]["AP"] == 0.0 and champ["per_class"][gone]["detections"] == 0
    for name in labels.values():  # the classes both know: the same detections, the same AP
        assert champ["per_class"][name]["AP"] == pytest.approx(doc["per_class"][name]["AP"])


def test_evaluate_gs_model_records_and_report(export_dir, records, gcs_bucket):
    import glob as _glob

    from fixture_gcs import upload_dir

    from odpipe import storage
    from odpipe.evaluate import evaluate

    eval_files = _glob.glob(records["eval"])
    for path in eval_files:
        storage.write_bytes(f"{gcs_bucket}/eval-records/{os.path.basename(path)}", open(path, "rb").read())
    upload_dir(str(export_dir), f"{gcs_bucket}/export")
    metrics = evaluate(f"{gcs_bucket}/export", f"{gcs_bucket}/eval-records/*.tfrecord", f"{gcs_bucket}/report",
                       min_map=0.0, report_images=1, progress=False)
    assert metrics["images"] > 0 and metrics["blessed"] is True
    doc = json.loads(storage.read_text(f"{gcs_bucket}/report/metrics.json"))
    assert doc["mAP"] == metrics["mAP"]
    assert "data:image/jpeg;base64," in storage.read_text(f"{gcs_bucket}/report/report.html")


def test_evaluate_refuses_records_of_another_label_map(detector, tmp_path):
    import tensorflow as tf

    from odpipe.evaluate import evaluate

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, format="JPEG")

    def feature(kind, values):
        return tf.train.Feature(**{kind: {"float_list": tf.train.FloatList, "int64_list": tf.train.Int64List,
                                          "bytes_list": tf.train.BytesList}[kind](value=values)})

    example = tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": feature("bytes_list", [buf.getvalue()]), "image/filename": feature("bytes_list", [b"red.jpg"]),
        "image/width": feature("int64_list", [64]), "image/height": feature("int64_list", [48]),
        **{f"image/object/bbox/{k}": feature("float_list", [v]) for k, v in
           (("xmin", 0.1), ("ymin", 0.1), ("xmax", 0.5), ("ymax", 0.6))},
        "image/object/class/label": feature("int64_list", [1]),
        "image/object/class/text": feature("bytes_list", [b"hexagon"]),
    }))
    path = tmp_path / "eval-00000-of-00001.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        w.write(example.SerializeToString())
    with pytest.raises(UserError, match=r"class id 1 is 'hexagon' in the records but 'circle'"):
        evaluate(detector, str(path), str(tmp_path / "r"), progress=False)
    (tmp_path / "junk-00000-of-00001.tfrecord").write_bytes(b"not a tfrecord at all")
    with pytest.raises(UserError, match="junk-00000-of-00001.tfrecord: corrupt TFRecord"):
        evaluate(detector, str(tmp_path / "junk-*.tfrecord"), str(tmp_path / "r"), progress=False)


def test_gs_records_read_through_storage_and_a_truncated_one_is_one_line(records, gcs_bucket):
    """gs:// eval records go through odpipe.storage (the emulator); damage is a short UserError, not a
    tf.data UnknownError traceback."""
    import glob

    from odpipe import storage
    from odpipe.evaluate import _serialized_batches

    local = sorted(glob.glob(records["eval"]))[0]
    data = open(local, "rb").read()
    uri = f"{gcs_bucket}/evaluate-test/eval-00000-of-00001.tfrecord"
    storage.write_bytes(uri, data)
    remote = [r for batch in _serialized_batches(uri, 3) for r in batch]
    assert remote and remote == [r for batch in _serialized_batches(local, 3) for r in batch]
    junk = f"{gcs_bucket}/evaluate-test/junk-00000-of-00001.tfrecord"
    storage.write_bytes(junk, data[:-10])
    with pytest.raises(UserError, match="junk-00000-of-00001.tfrecord: corrupt TFRecord") as info:
        list(_serialized_batches(junk, 3))
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def test_evaluate_runs_the_int8_tflite(evaluated, int8_export_dir, records, tmp_path):
    """`odpipe evaluate --model EXPORT/model.tflite`: the int8 model runs through the same
    evaluation, on the same records, by the same code. Its mAP is not compared with the float
    SavedModel's here: the fixture model's scores are a few hundredths, where int8's 1/256 score
    steps tie most detections; odpipe.bench.tflite measures the loss on a model trained for
    hundreds of steps (README)."""
    from odpipe.cli import main

    _, float_metrics = evaluated
    out = tmp_path / "r8"
    rc = main(["evaluate", "--model", str(int8_export_dir / "model.tflite"), "--data", records["eval"],
               "-o", str(out), "--report-images", "1"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == float_metrics["images"] and not metrics["skipped"]
    assert metrics["objects"] == float_metrics["objects"]
    assert metrics["model"].endswith("model.tflite") and metrics["detections"] > 0
    assert metrics["mAP@0.5"] is not None and set(metrics["per_class"]) == {"circle", "square", "triangle"}


def test_a_bare_gs_tflite_uses_the_labels_in_its_metadata(int8_export_dir, sample_dir, gcs_bucket):
    """model.tflite alone on gs:// (no label_map.pbtxt beside it): read through odpipe.storage,
    class names from the labels.txt packed in its metadata."""
    from odpipe import storage
    from odpipe.detector import Detector

    image = sorted((sample_dir / "images").glob("*.jpg"))[0].read_bytes()
    uri = f"{gcs_bucket}/lite-only/model.tflite"
    storage.write_bytes(uri, (int8_export_dir / "model.tflite").read_bytes())
    with Detector(uri) as lite:
        assert lite.label_map == {1: "circle", 2: "square", 3: "triangle"}
        raw = lite.detect_bytes([image, b"not an image"])
    assert isinstance(raw[0], dict) and len(raw[0]["scores"]) > 0 and isinstance(raw[1], str)
