"""odpipe data-report: statistics, each check on a fixture made to trip it (and one that does not),
drift on two fixtures, --strict, and the HTML opened in a headless Chromium with its images loaded."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from odpipe.annotations import format_labels_csv
from odpipe.cli import main
from odpipe.data_report import build_report
from odpipe.data_report.drift import compare, total_variation
from odpipe.data_report.geometry import best_anchor_iou, model_geometry
from odpipe.errors import UserError
from odpipe.train.presets import PRESETS


def row(name, cls="", box=None, size=(320, 240)):
    x0, y0, x1, y1 = box if box else (None,) * 4
    return [name, size[0], size[1], cls, x0, y0, x1, y1, 0, 0]


def objects(prefix, cls, n, box=(40, 40, 140, 120), size=(320, 240)):
    """n images, one box of `cls` each."""
    return [row(f"{prefix}{i:03d}.jpg", cls, box, size) for i in range(n)]


def write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_labels_csv(rows), encoding="utf-8")
    return str(path)


def report(tmp_path, rows, train=None, eval_=None, **kw):
    """build_report on `rows` (split into `train`/`eval_` when given); returns (result, stats)."""
    csv = write(tmp_path / "labels.csv", rows)
    split = None
    if train is not None:
        write(tmp_path / "split/train.csv", train)
        write(tmp_path / "split/eval.csv", eval_)
        split = str(tmp_path / "split")
    result = build_report(csv, str(tmp_path / "out"), splits_dir=split, progress=False, **kw)
    return result, json.loads((tmp_path / "out/data_stats.json").read_text())


def checks(result, severity=None):
    return {a["check"] for a in result["anomalies"] if severity in (None, a["severity"])}


def clean_rows():
    """Two classes, well sized, in both splits, enough eval objects: no anomaly."""
    train = objects("cat_t", "cat", 30) + objects("dog_t", "dog", 30, box=(100, 60, 220, 200))
    eval_ = objects("cat_e", "cat", 12) + objects("dog_e", "dog", 12, box=(100, 60, 220, 200))
    return train + eval_, train, eval_


# ----------------------------------------------------------------------------- geometry and stats


def test_geometry_read_from_the_preset_not_hard_coded():
    g = model_geometry("retinanet-mobilenetv2")
    anchor = PRESETS["retinanet-mobilenetv2"].overrides["model"]["anchor"]
    assert g.image_size == PRESETS["retinanet-mobilenetv2"].image_size
    assert g.smallest_anchor() == anchor["anchor_size"] * 2 ** PRESETS["retinanet-mobilenetv2"].overrides["model"]["min_level"]
    assert list(g.aspect_ratios) == anchor["aspect_ratios"]
    assert model_geometry("retinanet-mobilenetv2", 512).image_size == 512
    big = model_geometry("retinanet-resnet50fpn")  # its anchors are Model Garden's defaults
    assert big.image_size == 640 and big.smallest_anchor() == 4.0 * 8
    # a centred square box: IoU (s/24)^2 with the 24 px anchor; matchable from 24 * sqrt(0.5) = 16.97 px
    iou = best_anchor_iou([24, 17, 16], [24, 17, 16], g.anchors())
    assert iou[0] == pytest.approx(1.0) and iou[1] >= 0.5 > iou[2]


def test_stats_per_class_and_split(tmp_path):
    rows, train, eval_ = clean_rows()
    rows = rows + [row("empty.jpg")]
    result, stats = report(tmp_path, rows, train + [row("empty.jpg")], eval_)
    assert result["anomalies"] == [] and result["headline"]["errors"] == 0
    whole = stats["splits"]["all"]
    assert (whole["images"], whole["objects"], whole["empty_images"]) == (85, 84, 1)
    assert stats["splits"]["eval"]["classes"]["cat"]["objects"] == 12
    cat = whole["classes"]["cat"]
    assert cat["size_px"]["median"] == pytest.approx((100 * 80) ** 0.5, abs=0.01)
    # no --image-size: the size `odpipe train` would choose for these large boxes (the smallest, 128 px)
    assert stats["model"]["image_size"] == 128
    assert cat["size_at_input"]["median"] == pytest.approx((100 * 80) ** 0.5 * 128 / 320, abs=0.01)
    assert cat["size_relative"]["median"] == pytest.approx((100 * 80 / (320 * 240)) ** 0.5, abs=1e-4)
    assert stats["images"] is None  # no --images-dir: said so, not guessed
    page = (tmp_path / "out/data_report.html").read_text()
    assert "Images not available" in page and "no problem found" in page
    for name in ("class_counts", "box_sizes", "aspect_ratios", "box_centres", "image_sizes", "objects_per_image"):
        assert (tmp_path / f"out/{name}.png").read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- checks


def test_class_missing_from_a_split_and_few_eval_objects(tmp_path):
    train = objects("cat_t", "cat", 30) + objects("dog_t", "dog", 30) + objects("cow_t", "cow", 5)
    eval_ = objects("cat_e", "cat", 12) + objects("dog_e", "dog", 3)
    result, _ = report(tmp_path, train + eval_, train, eval_)
    found = {(a["check"], a["class"], a["severity"]) for a in result["anomalies"]}
    assert ("class_missing_from_split", "cow", "error") in found
    assert ("few_eval_objects", "dog", "warning") in found
    assert ("few_eval_objects", "cat", "warning") not in found


def test_boxes_too_small_for_the_input_size(tmp_path):
    rows, train, eval_ = clean_rows()
    tiny = objects("ant", "ant", 20, box=(10, 10, 18, 17), size=(640, 480))  # 8x7 px -> ~3 px at 256
    half = objects("bee", "bee", 10, box=(10, 10, 18, 17), size=(640, 480)) + objects("bee_big", "bee", 10)
    result, stats = report(tmp_path, rows + tiny + half)
    by_class = {a["class"]: a for a in result["anomalies"] if a["check"] == "small_boxes"}
    assert by_class["ant"]["severity"] == "error" and "--image-size" in by_class["ant"]["message"]
    assert by_class["bee"]["severity"] == "error"  # exactly half
    assert "cat" not in by_class and "dog" not in by_class
    assert stats["splits"]["all"]["classes"]["ant"]["unmatchable_share"] == 1.0
    # at a larger input size the same boxes are fine
    big, _ = report(tmp_path / "big", objects("ant", "ant", 20, box=(10, 10, 50, 45), size=(640, 480)), image_size=512)
    assert "small_boxes" not in checks(big)


def test_extreme_aspect_ratios(tmp_path):
    rows, _, _ = clean_rows()
    thin = objects("pole", "pole", 10, box=(100, 10, 110, 200))  # 10 x 190
    result, _ = report(tmp_path, rows + thin)
    assert [a["class"] for a in result["anomalies"] if a["check"] == "extreme_aspect"] == ["pole"]


def test_images_much_larger_than_the_input_size(tmp_path):
    big = objects("big", "cat", 20, box=(500, 500, 1500, 1400), size=(4000, 3000))
    result, _ = report(tmp_path, big)
    assert "large_images" in checks(result, "warning")
    result, _ = report(tmp_path / "ok", clean_rows()[0])
    assert "large_images" not in checks(result)


def test_images_with_more_objects_than_the_model_outputs(tmp_path):
    crowd = [row("crowd.jpg", "cat", (i % 30 * 10, i // 30 * 10, i % 30 * 10 + 9, i // 30 * 10 + 9), (320, 240))
             for i in range(model_geometry("retinanet-mobilenetv2").max_detections + 1)]
    result, _ = report(tmp_path, clean_rows()[0] + crowd)
    assert "crowded_images" in checks(result, "warning")
    result, _ = report(tmp_path / "ok", clean_rows()[0] + crowd[:-1])
    assert "crowded_images" not in checks(result)


def test_near_identical_labels(tmp_path):
    rows, _, _ = clean_rows()
    result, _ = report(tmp_path, rows + objects("car", "Car", 5) + objects("car2", "car ", 5)
                       + objects("p", "person", 5) + objects("q", "persn", 5))
    found = {(a["severity"], a["message"].split(":")[0]) for a in result["anomalies"] if a["check"] == "similar_labels"}
    assert ("error", "labels 'Car' and 'car ' differ only in case, spaces or separators") in found
    assert ("warning", "labels 'persn' and 'person' differ by one letter") in found
    assert len(found) == 2  # cat/dog (3 letters apart from each other) are not flagged


def _jpeg(path, seed, size=(320, 240), scale=1.0):
    rng = np.random.default_rng(seed)
    pixels = np.kron(rng.integers(0, 255, (6, 8, 3)), np.ones((40, 40, 1))).astype(np.uint8)  # 320x240 blocks
    img = Image.fromarray(pixels).resize((int(size[0] * scale), int(size[1] * scale)))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=90)


def _image_set(tmp_path):
    """Six distinct images; a byte copy of img0 (as copy0) and a half-size re-encode of img1 (as half1)."""
    images = tmp_path / "images"
    for i in range(6):
        _jpeg(images / f"img{i}.jpg", i)
    shutil.copy(images / "img0.jpg", images / "copy0.jpg")
    _jpeg(images / "half1.jpg", 1, scale=0.5)
    return images


def test_duplicates_and_broken_images(tmp_path):
    images = _image_set(tmp_path)
    rows = [row(f"img{i}.jpg", "cat", (40, 40, 140, 120)) for i in range(6)]
    train, eval_ = rows[:4] + [row("half1.jpg", "cat", (20, 20, 70, 60), (160, 120))], rows[4:] + [row("copy0.jpg", "cat", (40, 40, 140, 120))]
    result, stats = report(tmp_path, train + eval_, train, eval_, images_dir=str(images))
    assert stats["images"]["duplicates"] == [["copy0.jpg", "img0.jpg"]]
    assert stats["images"]["near_duplicates"] == [["half1.jpg", "img1.jpg"]]
    found = {(a["check"], a["severity"]) for a in result["anomalies"]}
    assert ("duplicates_across_splits", "error") in found  # img0 in train, its copy in eval
    assert ("near_duplicates", "warning") in found  # both in train
    assert not {c for c, _ in found} & {"images_missing", "images_size_mismatch"}
    # a missing image and a CSV size that is not the stored size
    bad = rows[:5] + [row("gone.jpg", "cat", (1, 1, 50, 50)), row("img5.jpg", "cat", (1, 1, 50, 50), (640, 480))]
    result, _ = report(tmp_path / "bad", bad, images_dir=str(images))
    assert {"images_missing", "images_size_mismatch"} <= checks(result, "error")


def test_clean_images_have_no_image_anomaly(tmp_path):
    images = _image_set(tmp_path)
    rows = [row(f"img{i}.jpg", "cat", (40, 40, 140, 120)) for i in range(6)]
    result, stats = report(tmp_path, rows, images_dir=str(images))
    assert result["anomalies"] == []
    assert stats["images"]["formats"] == {"jpeg": 6} and stats["images"]["grayscale"] == 0


# ----------------------------------------------------------------------------- drift


def test_drift_between_two_fixtures(tmp_path):
    old_rows = objects("cat", "cat", 50) + objects("dog", "dog", 40) + objects("cow", "cow", 10)
    _, _ = report(tmp_path / "old", old_rows)
    previous = str(tmp_path / "old/out/data_stats.json")
    same, _ = report(tmp_path / "same", old_rows, previous_stats=previous)
    assert not {c for c in checks(same) if c.startswith("drift")}
    # cow vanished, bird appeared, cat's share jumped, boxes shrank, fewer images
    new_rows = objects("cat", "cat", 60, box=(10, 10, 30, 25)) + objects("dog", "dog", 5) + objects("bird", "bird", 5)
    result, stats = report(tmp_path / "new", new_rows, previous_stats=previous)
    found = {(a["check"], a["class"], a["severity"]) for a in result["anomalies"]}
    assert ("drift_class_missing", "cow", "error") in found
    assert ("drift_class_added", "bird", "warning") in found
    assert ("drift_class_share", "cat", "warning") in found and ("drift_class_share", "dog", "warning") in found
    assert ("drift_box_sizes", None, "warning") in found
    assert ("drift_images", None, "warning") in found
    assert stats["drift"]["classes_missing"] == ["cow"] and stats["drift"]["images_change"] == -0.3
    assert "Drift against the model in service" in (tmp_path / "new/out/data_report.html").read_text()
    assert (tmp_path / "new/out/drift.png").exists()


def test_total_variation_is_the_stated_distance():
    assert total_variation([1, 0], [0, 1]) == 1.0
    assert total_variation([2, 2], [1, 1]) == 0.0
    assert total_variation([3, 1], [1, 3]) == 0.5


def test_drift_thresholds(tmp_path):
    now = {"model": {"image_size": 256}, "splits": {"all": {"images": 100, "objects": 100, "size_histogram": [50, 50],
                                                           "classes": {"a": {"objects": 55, "share": 0.55}, "b": {"objects": 45, "share": 0.45}}}}}
    before = json.loads(json.dumps(now))
    before["splits"]["all"]["classes"] = {"a": {"objects": 50, "share": 0.5}, "b": {"objects": 50, "share": 0.5}}
    _, found = compare(now, before)
    assert found == []  # 5 points is under the 10-point threshold
    _, found = compare(now, before, share_threshold=0.04)
    assert {a["class"] for a in found} == {"a", "b"}


# ----------------------------------------------------------------------------- CLI


def test_cli_strict_exits_2_on_errors_only(tmp_path, capsys):
    csv = write(tmp_path / "labels.csv", objects("ant", "ant", 20, box=(10, 10, 18, 17), size=(640, 480)))
    assert main(["data-report", csv, "-o", str(tmp_path / "a")]) == 0
    assert "data report: " in capsys.readouterr().out
    assert main(["data-report", csv, "-o", str(tmp_path / "b"), "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("odpipe data-report: error: ") and err.count("\n") == 1 and "too small" in err
    assert (tmp_path / "b/data_stats.json").exists()  # the report is written before the verdict
    empty = write(tmp_path / "empty.csv", [row("a.jpg"), row("b.jpg")])
    assert main(["data-report", empty, "-o", str(tmp_path / "e"), "--strict"]) == 2
    assert "holds no object" in capsys.readouterr().err
    fine = write(tmp_path / "fine.csv", clean_rows()[0])
    assert main(["data-report", fine, "-o", str(tmp_path / "c"), "--strict"]) == 0


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    csv = write(tmp_path / "labels.csv", clean_rows()[0])
    assert main(["data-report", csv, "-o", str(tmp_path / "o"), "--split", str(tmp_path / "nowhere")]) == 2
    assert "split file not found" in capsys.readouterr().err
    (tmp_path / "junk.json").write_text("{}")
    assert main(["data-report", csv, "-o", str(tmp_path / "o"), "--previous", str(tmp_path / "junk.json")]) == 2
    assert "not a data_stats.json" in capsys.readouterr().err
    assert main(["data-report", csv, "-o", str(tmp_path / "o"), "--image-size", "100"]) == 2
    assert "needs a multiple of 64" in capsys.readouterr().err
    assert main(["data-report", csv, "-o", str(tmp_path / "o"), "--min-eval-objects", "0"]) == 2
    assert "must be a positive number" in capsys.readouterr().err
    with pytest.raises(UserError, match="images folder not found"):
        build_report(csv, str(tmp_path / "o"), images_dir=str(tmp_path / "none"), progress=False)


# ----------------------------------------------------------------------------- the page in a browser

_MARK_IMAGES = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.title = 'loaded ' + imgs.filter(i => i.complete && i.naturalWidth > 0).length + ' of ' + imgs.length;
});</script></body>"""


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (make setup installs it where it can)")
def test_report_opens_in_a_headless_browser_with_every_image_loaded(tmp_path, sample_dir, labels_csv, split_dir):
    result = build_report(str(labels_csv), str(tmp_path / "out"), splits_dir=str(split_dir),
                          images_dir=str(sample_dir / "images"), progress=False)
    page = (tmp_path / "out/data_report.html").read_text()
    assert "src='data:image/png;base64," in page and "src='data:image/jpeg;base64," in page  # self-contained
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", _MARK_IMAGES))
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
           "--dump-dom", probe.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)}).stdout
    loaded = re.search(r"<title>loaded (\d+) of (\d+)</title>", dom)
    assert loaded, dom[:500]
    assert int(loaded.group(2)) >= 6 + 3 * 4 and loaded.group(1) == loaded.group(2)  # plots + gallery
    assert result["html"].endswith("data_report.html")


def test_report_reads_and_writes_gs(tmp_path, gcs_bucket):
    from odpipe import storage

    images = _image_set(tmp_path)
    rows = [row(f"img{i}.jpg", "cat", (40, 40, 140, 120)) for i in range(6)] + [row("copy0.jpg", "cat", (1, 1, 9, 9))]
    storage.copy_tree(str(images), f"{gcs_bucket}/dr/images")
    storage.write_text(f"{gcs_bucket}/dr/labels.csv", format_labels_csv(rows))
    first = build_report(f"{gcs_bucket}/dr/labels.csv", f"{gcs_bucket}/dr/old", images_dir=f"{gcs_bucket}/dr/images",
                         progress=False)
    result = build_report(f"{gcs_bucket}/dr/labels.csv", f"{gcs_bucket}/dr/new", images_dir=f"{gcs_bucket}/dr/images",
                          previous_stats=first["stats"], progress=False)
    stats = json.loads(storage.read_text(result["stats"]))
    assert stats["images"]["duplicates"] == [["copy0.jpg", "img0.jpg"]] and stats["drift"]["size_distance"] == 0.0
    assert storage.read_text(result["html"]).startswith("<!DOCTYPE html>")
    assert storage.exists(f"{gcs_bucket}/dr/new/box_sizes.png")
