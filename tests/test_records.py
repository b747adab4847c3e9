"""odpipe.records: CSV + images -> TFRecords with Beam (DirectRunner), on tiny fixtures made here."""

from __future__ import annotations

import csv
import glob
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from odpipe import records, storage
from odpipe.errors import UserError
from odpipe.records import example as example_module
from odpipe.records.writer import ordered_map

IN_MEMORY = ["--direct_running_mode=in_memory"]  # any Beam flag: the job runs on Beam's DirectRunner
HEADER = ["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax", "difficult", "truncated"]
EXPECTED_KEYS = {
    "image/encoded": "bytes_list", "image/format": "bytes_list", "image/height": "int64_list",
    "image/width": "int64_list", "image/filename": "bytes_list", "image/source_id": "bytes_list",
    "image/key/sha256": "bytes_list", "image/object/bbox/xmin": "float_list", "image/object/bbox/ymin": "float_list",
    "image/object/bbox/xmax": "float_list", "image/object/bbox/ymax": "float_list",
    "image/object/class/text": "bytes_list", "image/object/class/label": "int64_list",
    "image/object/area": "float_list", "image/object/is_crowd": "int64_list",
    "image/object/difficult": "int64_list", "image/object/truncated": "int64_list",
}


def _rgb(w, h, seed=0):
    rng = np.random.default_rng(seed)
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    arr[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    arr[..., 2] = rng.integers(0, 255)
    return Image.fromarray(arr, "RGB")


def _save(img, path, fmt, **kw):
    img.save(path, fmt, **kw)


def write_images(folder) -> list[list]:
    """A mixed bag of real-world image files in `folder`; returns the CSV rows describing them."""
    os.makedirs(folder, exist_ok=True)
    p = lambda name: os.path.join(folder, name)  # noqa: E731
    _save(_rgb(64, 48), p("rgb.jpg"), "JPEG", quality=90)
    _save(_rgb(40, 30, 1).convert("L"), p("gray.jpg"), "JPEG")
    _save(_rgb(50, 40, 2), p("prog.JPG"), "JPEG", progressive=True)
    _save(_rgb(48, 36, 3).convert("CMYK"), p("cmyk.jpg"), "JPEG")
    _save(_rgb(32, 32, 4), p("plain.png"), "PNG")
    rgba = _rgb(30, 20, 5).convert("RGBA")
    rgba.putalpha(128)
    _save(rgba, p("alpha.png"), "PNG")
    _save(Image.fromarray((np.arange(24 * 16).reshape(16, 24) * 150).astype(np.uint16)), p("deep.png"), "PNG")
    _save(_rgb(28, 22, 6).convert("P"), p("palette.png"), "PNG")
    _save(_rgb(26, 18, 7), p("anim.gif"), "GIF")
    _save(_rgb(36, 24, 8), p("photo.webp"), "WEBP")
    _save(_rgb(20, 20, 9), p("bitmap.bmp"), "BMP")
    _save(_rgb(40, 40, 10), p("empty.jpg"), "JPEG")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": labelImg and TF both ignore it; stored pixels are kept
    _save(_rgb(60, 20, 13), p("rotated.jpg"), "JPEG", exif=exif)
    whole = io.BytesIO()
    _rgb(80, 60, 11).save(whole, "JPEG", quality=95)
    with open(p("truncated.jpg"), "wb") as f:
        f.write(whole.getvalue()[: len(whole.getvalue()) // 2])
    data = whole.getvalue()
    with open(p("garbage.jpg"), "wb") as f:  # random bytes inside the scan: TF rejects it, so do we
        f.write(data[: len(data) // 2] + bytes(np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8))
                + data[len(data) // 2 + 400:])
    with open(p("notes.jpg"), "wb") as f:
        f.write(b"this is not an image\n")
    _save(_rgb(30, 30, 12), p("wrongsize.jpg"), "JPEG")
    return [
        ["rgb.jpg", 64, 48, "cat", 8, 6, 40, 30, 0, 0],
        ["rgb.jpg", 64, 48, "dog", 30.5, 20.25, 63.5, 47, 1, 1],
        ["rgb.jpg", 64, 48, "dog", -5, -5, 70, 50, 0, 0],  # clipped to the image
        ["rgb.jpg", 64, 48, "cat", 70, 50, 90, 60, 0, 0],  # wholly outside: dropped
        ["gray.jpg", 40, 30, "cat", 1, 1, 20, 20, 0, 0],
        ["prog.JPG", 50, 40, "dog", 5, 5, 45, 35, 0, 0],
        ["cmyk.jpg", 48, 36, "cat", 2, 2, 30, 30, 0, 0],
        ["plain.png", 32, 32, "dog", 0, 0, 32, 32, 0, 0],
        ["alpha.png", 30, 20, "cat", 1, 1, 10, 10, 0, 0],
        ["deep.png", 24, 16, "dog", 2, 2, 20, 14, 0, 0],
        ["palette.png", 28, 22, "cat", 3, 3, 20, 20, 0, 0],
        ["anim.gif", 26, 18, "dog", 1, 1, 25, 17, 0, 0],
        ["photo.webp", 36, 24, "cat", 4, 4, 30, 20, 0, 0],
        ["bitmap.bmp", 20, 20, "dog", 2, 2, 18, 18, 0, 0],
        ["empty.jpg", 40, 40, "", "", "", "", "", 0, 0],
        ["rotated.jpg", 60, 20, "cat", 10, 2, 50, 18, 0, 0],
        ["truncated.jpg", 80, 60, "cat", 1, 1, 50, 50, 0, 0],  # repaired
        ["garbage.jpg", 80, 60, "dog", 1, 1, 50, 50, 0, 0],
        ["notes.jpg", 10, 10, "dog", 1, 1, 5, 5, 0, 0],
        ["missing.jpg", 10, 10, "cat", 1, 1, 5, 5, 0, 0],
        ["wrongsize.jpg", 60, 30, "cat", 1, 1, 25, 25, 0, 0],
    ]


def pick(rows, *names):
    return [r for r in rows if r[0] in names]


def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerows(rows)
    return str(path)


def write_map(path, names):
    from odpipe.label_map import format_label_map

    with open(path, "w", encoding="utf-8") as f:
        f.write(format_label_map({i + 1: n for i, n in enumerate(names)}))
    return str(path)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    rows = write_images(root / "images")
    csv_path = write_csv(root / "labels.csv", rows)
    map_path = write_map(root / "label_map.pbtxt", ["cat", "dog"])
    prefix = str(root / "out" / "mixed")
    summary = records.convert(csv_path, str(root / "images"), map_path, prefix, shards=2)
    return {"root": root, "rows": rows, "csv": csv_path, "map": map_path, "prefix": prefix, "summary": summary}


def _examples(pattern):
    import tensorflow as tf

    out = []
    for path in sorted(glob.glob(pattern)):
        for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
            out.append(raw)
    return out


def test_summary_counts_add_up(mixed):
    s = mixed["summary"]
    csv_images = {r[0] for r in mixed["rows"]}
    assert s["images"] + len(s["rejected"]) == len(csv_images) == s["csv"]["images"]
    assert s["csv"]["rows"] == len(mixed["rows"])
    reasons = {r["file"]: r["reason"] for r in s["rejected"]}
    assert set(reasons) == {"garbage.jpg", "notes.jpg", "missing.jpg", "wrongsize.jpg"}
    assert "invalid marker" in reasons["garbage.jpg"]
    assert s["repaired"] == [{"file": "truncated.jpg", "reason": "truncated JPEG file (no end-of-image marker)"}]
    assert "not found" in reasons["missing.jpg"]
    assert "60x30" in reasons["wrongsize.jpg"] and "30x30" in reasons["wrongsize.jpg"]
    assert s["dropped_objects"] == [{"file": "rgb.jpg", "class": "cat", "reason": "box is empty after clipping to the image"}]
    assert s["clipped_objects"] == 1
    written_rows = [r for r in mixed["rows"] if r[3] and r[0] not in reasons]
    assert s["objects"] == len(written_rows) - len(s["dropped_objects"]) == sum(s["classes"].values())
    c = s["counters"]
    assert c["images_written"] == s["images"] and c["objects_written"] == s["objects"]
    assert c["rejected_corrupt"] == 1 and c["rejected_unreadable"] == 1 and c["rejected_missing"] == 1
    assert c["rejected_size_mismatch"] == 1 and c["images_repaired"] == 1
    assert s["exif_orientation_ignored"] == c["exif_orientation_ignored"] == 1
    assert set(s["converted"]) == {"jpeg_cmyk_to_rgb", "png_rgba_to_png", "png_i;16_to_png", "gif_p_to_png",
                                   "webp_rgb_to_png", "bmp_rgb_to_png"}
    on_disk = json.loads(open(mixed["prefix"] + ".summary.json").read())
    assert on_disk == json.loads(json.dumps(s))
    assert len(_examples(mixed["prefix"] + "-*.tfrecord")) == s["images"]


def test_feature_keys_and_types(mixed):
    import tensorflow as tf

    for raw in _examples(mixed["prefix"] + "-*.tfrecord"):
        feats = tf.train.Example.FromString(raw).features.feature
        assert set(feats) == set(EXPECTED_KEYS)
        for key, kind in EXPECTED_KEYS.items():
            assert feats[key].WhichOneof("kind") == kind, key
        fmt = feats["image/format"].bytes_list.value[0].decode()
        data = feats["image/encoded"].bytes_list.value[0]
        assert fmt == {"JPEG": "jpeg", "PNG": "png"}[Image.open(io.BytesIO(data)).format]
        assert feats["image/source_id"].bytes_list.value[0].decode().isdigit()
        n = len(feats["image/object/class/text"].bytes_list.value)
        for key in EXPECTED_KEYS:
            if key.startswith("image/object/"):
                assert len(getattr(feats[key], EXPECTED_KEYS[key]).value) == n, key


def test_every_record_decodes_with_model_garden_decoder(mixed):
    from official.vision.dataloaders.tf_example_decoder import TfExampleDecoder

    decoder = TfExampleDecoder()
    expected = {}
    for r in mixed["rows"]:
        expected.setdefault(r[0], (r[1], r[2]))
    seen = set()
    ids = set()
    for raw in _examples(mixed["prefix"] + "-*.tfrecord"):
        import tensorflow as tf

        name = tf.train.Example.FromString(raw).features.feature["image/filename"].bytes_list.value[0].decode()
        d = decoder.decode(tf.constant(raw))
        assert tuple(d["image"].shape) == (d["height"].numpy(), d["width"].numpy(), 3)
        assert (int(d["width"]), int(d["height"])) == expected[name]
        boxes = d["groundtruth_boxes"].numpy()
        assert boxes.shape[1:] == (4,) and len(boxes) == len(d["groundtruth_classes"].numpy())
        assert ((boxes >= 0) & (boxes <= 1)).all()
        ids.add(int(d["source_id"].numpy()))
        seen.add(name)
    assert len(ids) == len(seen)
    assert {"gray.jpg", "prog.JPG", "cmyk.jpg", "alpha.png", "deep.png", "anim.gif", "photo.webp", "empty.jpg",
            "truncated.jpg"} <= seen


def test_conversions_keep_the_picture(mixed):
    import tensorflow as tf

    by_name = {}
    for raw in _examples(mixed["prefix"] + "-*.tfrecord"):
        feats = tf.train.Example.FromString(raw).features.feature
        by_name[feats["image/filename"].bytes_list.value[0].decode()] = feats
    images = mixed["root"] / "images"
    # kept byte for byte (EXIF orientation too: stored pixels, 60x20, as labelImg showed them)
    assert by_name["gray.jpg"]["image/encoded"].bytes_list.value[0] == (images / "gray.jpg").read_bytes()
    assert by_name["rotated.jpg"]["image/encoded"].bytes_list.value[0] == (images / "rotated.jpg").read_bytes()
    assert tf.io.decode_image(by_name["rotated.jpg"]["image/encoded"].bytes_list.value[0]).shape[:2] == (20, 60)
    # CMYK -> RGB: what TF decodes is Pillow's RGB rendering of the CMYK file (within JPEG loss)
    cmyk = tf.io.decode_image(by_name["cmyk.jpg"]["image/encoded"].bytes_list.value[0], channels=3).numpy()
    ref = np.asarray(Image.open(images / "cmyk.jpg").convert("RGB"), dtype=np.int16)
    assert np.abs(cmyk.astype(np.int16) - ref).mean() < 6
    # RGBA flattened over white: half-transparent pixels are lighter than the source
    alpha = tf.io.decode_image(by_name["alpha.png"]["image/encoded"].bytes_list.value[0], channels=3).numpy()
    src = np.asarray(Image.open(images / "alpha.png").convert("RGB"), dtype=np.int16)
    assert (alpha.astype(np.int16) >= src - 1).all() and alpha.mean() > src.mean()
    # 16-bit PNG scaled to 8 bits, not clipped
    deep = tf.io.decode_image(by_name["deep.png"]["image/encoded"].bytes_list.value[0], channels=3).numpy()
    assert deep.max() > 200 and deep.min() < 10


def test_boxes_normalised_and_clipped(mixed):
    import tensorflow as tf

    for raw in _examples(mixed["prefix"] + "-*.tfrecord"):
        feats = tf.train.Example.FromString(raw).features.feature
        if feats["image/filename"].bytes_list.value[0] != b"rgb.jpg":
            continue
        f = lambda k, feats=feats: list(feats[f"image/object/{k}"].float_list.value)  # noqa: E731
        boxes = sorted(zip(f("bbox/xmin"), f("bbox/ymin"), f("bbox/xmax"), f("bbox/ymax")))
        assert len(boxes) == 3
        assert boxes[0] == pytest.approx((0.0, 0.0, 1.0, 1.0))
        assert boxes[1] == pytest.approx((8 / 64, 6 / 48, 40 / 64, 30 / 48))
        assert boxes[2] == pytest.approx((30.5 / 64, 20.25 / 48, 63.5 / 64, 47 / 48))
        assert sorted(feats["image/object/difficult"].int64_list.value) == [0, 0, 1]
        assert sorted(f("area")) == pytest.approx(sorted([32 * 24, 33 * 26.75, 64 * 48]))
        return
    pytest.fail("rgb.jpg not written")


def test_sharding_and_stale_shards_replaced(tmp_path):
    rows = pick(write_images(tmp_path / "images"), "rgb.jpg", "gray.jpg", "prog.JPG")
    csv_path = write_csv(tmp_path / "l.csv", rows)
    map_path = write_map(tmp_path / "m.pbtxt", ["cat", "dog"])
    prefix = str(tmp_path / "out" / "s")
    records.convert(csv_path, str(tmp_path / "images"), map_path, prefix, shards=3)
    assert sorted(os.path.basename(p) for p in glob.glob(prefix + "-*.tfrecord")) == [
        f"s-0000{i}-of-00003.tfrecord" for i in range(3)
    ]
    summary = records.convert(csv_path, str(tmp_path / "images"), map_path, prefix, shards=1)
    assert [os.path.basename(p) for p in glob.glob(prefix + "-*.tfrecord")] == ["s-00000-of-00001.tfrecord"]
    assert len(_examples(prefix + "-*.tfrecord")) == summary["images"] == 3
    assert sorted(os.listdir(tmp_path / "out")) == ["s-00000-of-00001.tfrecord", "s.summary.json"]


def test_failed_run_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    rows = write_images(tmp_path / "images")[:2]
    csv_path = write_csv(tmp_path / "l.csv", rows)
    map_path = write_map(tmp_path / "m.pbtxt", ["cat", "dog"])

    def boom(item, data, verify="pixels"):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(example_module, "image_to_example", boom)
    for beam_args in (None, IN_MEMORY):  # the local run and Beam's DirectRunner
        with pytest.raises(Exception, match="disk on fire"):
            records.convert(csv_path, str(tmp_path / "images"), map_path, str(tmp_path / "out" / "x"), shards=2,
                            beam_args=beam_args)
        assert os.listdir(tmp_path / "out") == []


def test_unknown_class_is_one_line_error(tmp_path, capsys):
    from odpipe.cli import main

    rows = write_images(tmp_path / "images")[:1] + [["gray.jpg", 40, 30, "zebra", 1, 1, 5, 5, 0, 0]]
    csv_path = write_csv(tmp_path / "l.csv", rows)
    map_path = write_map(tmp_path / "m.pbtxt", ["cat", "dog"])
    with pytest.raises(UserError, match=r"class 'zebra' \(image gray.jpg\) is not in the label map"):
        records.convert(csv_path, str(tmp_path / "images"), map_path, str(tmp_path / "o" / "x"))
    rc = main(["tfrecord", csv_path, "--images-dir", str(tmp_path / "images"), "--label-map", map_path,
               "-o", str(tmp_path / "o" / "x")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "zebra" in err and "l.csv" in err
    assert not (tmp_path / "o").exists() or not glob.glob(str(tmp_path / "o" / "x-*"))


def test_cli_prints_counters(tmp_path, capsys):
    from odpipe.cli import main

    rows = pick(write_images(tmp_path / "images"), "gray.jpg", "plain.png") + [["missing.jpg", 10, 10, "cat", 1, 1, 5, 5, 0, 0]]
    csv_path = write_csv(tmp_path / "l.csv", rows)
    map_path = write_map(tmp_path / "m.pbtxt", ["cat", "dog"])
    rc = main(["tfrecord", csv_path, "--images-dir", str(tmp_path / "images"), "--label-map", map_path,
               "-o", str(tmp_path / "o" / "x"), "--shards", "1"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "2 images" in out and "rejected 1 image" in out and "images_written=2" in out and "rejected_missing=1" in out
    assert "missing.jpg" in err


def test_plan_is_pure_and_source_ids_are_stable():
    import pandas as pd

    frame = pd.DataFrame(
        [["b.jpg", 100, 50, "cat", 10.0, 5.0, 60.0, 45.0, 0, 0], ["a.jpg", 10, 10, "", np.nan, np.nan, np.nan, np.nan, 0, 0]],
        columns=HEADER,
    )
    plan = records.plan_images(frame, {1: "cat"})
    assert [it["filename"] for it in plan["items"]] == ["a.jpg", "b.jpg"]
    assert plan["items"][0]["objects"] == []
    obj = plan["items"][1]["objects"][0]
    assert (obj["xmin"], obj["ymin"], obj["xmax"], obj["ymax"]) == (0.1, 0.1, 0.6, 0.9) and obj["label"] == 1
    assert plan["items"][1]["source_id"] == records.source_id_for("b.jpg") == records.source_id_for("b.jpg")
    assert 1 <= records.source_id_for("x") <= 2**53
    assert len({records.source_id_for(f"img_{i}.jpg") for i in range(5000)}) == 5000
    bad = pd.DataFrame([["a.jpg", 10, 10, "", np.nan, np.nan, np.nan, np.nan, 0, 0],
                        ["a.jpg", 12, 10, "", np.nan, np.nan, np.nan, np.nan, 0, 0]], columns=HEADER)
    with pytest.raises(UserError, match="a.jpg is listed as 10x10 and as 12x10"):
        records.plan_images(bad, {1: "cat"}, "x.csv")
    for escaping in ("../a.jpg", "/etc/a.jpg", "C:\\x\\a.jpg", "sub/../../a.jpg"):
        bad = pd.DataFrame([[escaping, 10, 10, "", np.nan, np.nan, np.nan, np.nan, 0, 0]], columns=HEADER)
        with pytest.raises(UserError, match="must be relative to --images-dir"):
            records.plan_images(bad, {1: "cat"}, "x.csv")


def test_pipeline_options_dataflow():
    from apache_beam.options.pipeline_options import GoogleCloudOptions, StandardOptions, WorkerOptions

    from odpipe.records.transforms import build_pipeline_options

    flow = build_pipeline_options(
        "DataflowRunner",
        ["--project=p1", "--region=europe-west4", "--temp_location=gs://b/tmp", "--sdk_container_image=img:1",
         "--max_num_workers=7"],
    )
    assert flow.view_as(StandardOptions).runner == "DataflowRunner"
    gco = flow.view_as(GoogleCloudOptions)
    assert (gco.project, gco.region, gco.temp_location) == ("p1", "europe-west4", "gs://b/tmp")
    assert flow.view_as(WorkerOptions).sdk_container_image == "img:1"
    assert flow.view_as(WorkerOptions).max_num_workers == 7
    with pytest.raises(UserError, match="--region, --temp_location"):
        build_pipeline_options("DataflowRunner", ["--project=p1"])
    with pytest.raises(UserError, match="--region, --temp_location"):  # before anything is read or written
        records.convert("missing.csv", "img", "missing.pbtxt", "out/x", runner="DataflowRunner", beam_args=["--project=p1"])


def test_gcs_in_and_out(tmp_path, gcs_bucket):
    from fixture_gcs import upload_dir

    from odpipe import storage
    from odpipe.inspect_records import inspect_records

    rows = pick(write_images(tmp_path / "images"), "rgb.jpg", "gray.jpg", "prog.JPG", "plain.png")
    rows += [["missing.jpg", 10, 10, "cat", 1, 1, 5, 5, 0, 0]]
    (tmp_path / "data").mkdir()
    write_csv(tmp_path / "data" / "l.csv", rows)
    write_map(tmp_path / "data" / "m.pbtxt", ["cat", "dog"])
    base = f"{gcs_bucket}/records-test"
    upload_dir(str(tmp_path / "images"), f"{base}/images")
    upload_dir(str(tmp_path / "data"), f"{base}/data")
    summary = records.convert(f"{base}/data/l.csv", f"{base}/images", f"{base}/data/m.pbtxt", f"{base}/out/train")
    assert summary["images"] == 4 and [r["file"] for r in summary["rejected"]] == ["missing.jpg"]
    assert storage.glob(f"{base}/out/train-*.tfrecord") == [f"{base}/out/train-00000-of-00001.tfrecord"]
    assert storage.glob(f"{base}/out/**") == [f"{base}/out/train-00000-of-00001.tfrecord", f"{base}/out/train.summary.json"]
    assert json.loads(storage.read_text(f"{base}/out/train.summary.json"))["images"] == 4
    report = inspect_records(f"{base}/out/train-*.tfrecord", label_map_path=f"{base}/data/m.pbtxt",
                             csv_path=f"{base}/data/l.csv")
    assert report["images"] == 4
    assert report["differences"] == ["missing.jpg: in the CSV but not in the records"]


def test_verify_modes_repair_a_jpeg_missing_its_end():
    """Issue 9.12: a JPEG that only lacks its last bytes is decoded as far as it goes, re-encoded and kept
    (both verify modes), with the damage reported; a file with nothing decodable stays rejected."""
    import tensorflow as tf

    buf = io.BytesIO()
    _rgb(64, 48).save(buf, "JPEG")
    good = buf.getvalue()
    for verify in records.VERIFY_MODES:
        assert records.prepare_image(good, verify)[:4] == (good, "jpeg", 64, 48)
        assert records.prepare_image(good, verify).repaired is None
        for cut in (2, 200, len(good) - good.index(b"\xff\xda") - 40):  # down to 40 bytes of image data
            fixed = records.prepare_image(good[: len(good) - cut], verify)
            assert fixed.repaired == "truncated JPEG file (no end-of-image marker)" and fixed.data != good
            assert tuple(tf.io.decode_image(fixed.data, channels=3).shape) == (48, 64, 3)  # TF decodes the repair
        headers_only = good[: good.index(b"\xff\xda")]  # no image data at all
        with pytest.raises(records.Rejected) as info:
            records.prepare_image(headers_only, verify)
        assert info.value.key in ("corrupt", "unreadable")
    with pytest.raises(records.Rejected) as info:
        records.prepare_image(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    assert info.value.key in ("corrupt", "unreadable")


def _noisy_jpeg(progressive=False) -> bytes:
    rng = np.random.default_rng(3)
    arr = (rng.normal(128, 40, (96, 128, 3))).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, "JPEG", quality=90, progressive=progressive)
    return buf.getvalue()


@pytest.mark.parametrize("progressive", [False, True])
def test_verification_agrees_with_tensorflow_on_damaged_jpegs(progressive):
    """The default verify mode rejects exactly the damaged files TF's decoder rejects (and keeps the rest),
    except truncated files, which TF rejects and odpipe repairs into a file TF decodes."""
    import tensorflow as tf

    good = _noisy_jpeg(progressive)
    n = len(good)
    garbage = bytes(np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8))
    cases = {
        "truncated": good[: n - 300],
        "truncated_half": good[: n // 2],
        "garbage_inside": good[: n // 2] + garbage + good[n // 2 + 600:],
        "zeros_inside": good[: n // 2] + b"\0" * 600 + good[n // 2 + 600:],
        "stray_bytes_before_scan": good[: good.index(b"\xff\xda")] + b"\0\0\0" + good[good.index(b"\xff\xda"):],
    }
    for name, data in cases.items():
        try:
            tf.io.decode_image(data, channels=3).numpy()
            tf_ok = True
        except tf.errors.InvalidArgumentError:
            tf_ok = False
        try:
            prepared = records.prepare_image(data)
            ours = True
        except records.Rejected as rej:
            ours = False
            assert rej.key == "corrupt" and str(rej), name
        if name.startswith("truncated"):
            assert not tf_ok and ours and prepared.repaired, name
            assert tf.io.decode_image(prepared.data, channels=3).shape[:2] == (96, 128)
            continue
        assert ours == tf_ok, f"{name}: TF decodes={tf_ok}, odpipe keeps={ours}"
        if name.startswith("stray"):
            assert ours and tf_ok, name  # a real-world quirk that libjpeg tolerates is kept
        if name.startswith("garbage"):
            assert not ours, name  # the cases that matter are really rejected, by both modes
            with pytest.raises(records.Rejected):
                records.prepare_image(data, "structure")


def test_png_chunk_damage_rejected_by_both_modes():
    buf = io.BytesIO()
    _rgb(64, 48).save(buf, "PNG")
    bad = bytearray(buf.getvalue())
    bad[len(bad) // 2] ^= 0x01
    for verify in records.VERIFY_MODES:
        with pytest.raises(records.Rejected, match="CRC mismatch"):
            records.prepare_image(bytes(bad), verify)
    assert records.prepare_image(buf.getvalue(), "header")[1] == "png"  # the old mode name still works


def test_threaded_preparation_keeps_order_and_reports_rejections(tmp_path):
    names = [f"im{i:02d}.jpg" for i in range(12)]
    os.makedirs(tmp_path / "images")
    for i, name in enumerate(names):
        if i != 5:
            _rgb(32 + i, 24).save(tmp_path / "images" / name, "JPEG")
    items = [{"filename": n, "width": 32 + i, "height": 24, "source_id": i + 1, "objects": []} for i, n in enumerate(names)]
    for threads in (1, 3):
        got = list(ordered_map(lambda it: records.process_image(it, str(tmp_path / "images")), items, threads))
        assert [item["filename"] for item, _ in got] == names
        assert isinstance(got[5][1], records.Rejected) and got[5][1].key == "missing"
        assert all(not isinstance(r, records.Rejected) for i, (_, r) in enumerate(got) if i != 5)


def test_an_unreadable_local_image_is_rejected_not_a_crash(tmp_path, monkeypatch):
    """A local read error other than "not found" (permissions, I/O error) rejects that image with its reason."""
    os.makedirs(tmp_path / "images")
    for name in ("a.jpg", "b.jpg"):
        _rgb(32, 24).save(tmp_path / "images" / name, "JPEG")
    real = storage.read_bytes

    def read_bytes(path):
        if path.endswith("b.jpg"):
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(storage, "read_bytes", read_bytes)
    items = [{"filename": n, "width": 32, "height": 24, "source_id": i + 1, "objects": []} for i, n in enumerate(("a.jpg", "b.jpg"))]
    got = [(it, records.process_image(it, str(tmp_path / "images"))) for it in items]
    assert not isinstance(got[0][1], records.Rejected)
    assert isinstance(got[1][1], records.Rejected) and got[1][1].key == "unreadable"
    assert "b.jpg" in str(got[1][1]) and "PermissionError" in str(got[1][1])


def test_beam_directrunner_writes_the_same_records_as_the_local_run(mixed, tmp_path):
    """Any Beam flag runs the job on Beam (as on Dataflow): same per-image functions, same records."""
    prefix = str(tmp_path / "beam" / "mixed")
    summary = records.convert(mixed["csv"], str(mixed["root"] / "images"), mixed["map"], prefix, shards=2,
                              beam_args=IN_MEMORY)
    for key in ("images", "objects", "classes", "rejected", "repaired", "converted", "dropped_objects"):
        assert summary[key] == mixed["summary"][key], key
    for shard in range(2):
        name = f"-0000{shard}-of-00002.tfrecord"
        assert open(prefix + name, "rb").read() == open(mixed["prefix"] + name, "rb").read()


def test_one_or_many_threads_write_the_same_records(mixed, tmp_path):
    prefix = str(tmp_path / "threads" / "mixed")
    summary = records.convert(mixed["csv"], str(mixed["root"] / "images"), mixed["map"], prefix, shards=2, threads=1)
    for key in ("images", "objects", "classes", "rejected", "repaired", "converted", "dropped_objects", "csv"):
        assert summary[key] == mixed["summary"][key], key
    for shard in range(2):
        name = f"-0000{shard}-of-00002.tfrecord"
        assert open(prefix + name, "rb").read() == open(mixed["prefix"] + name, "rb").read()


def test_structure_mode_header_walk_agrees_with_pillow(mixed):
    """--verify structure reads a JPEG's size, components and EXIF orientation in the marker walk
    (no Pillow header parse); the result is the same as the Pillow path's."""
    for path in sorted((mixed["root"] / "images").iterdir()):
        data = path.read_bytes()
        try:
            fast = records.prepare_image(data, "structure")
        except records.Rejected as rej:
            with pytest.raises(records.Rejected) as info:
                records.prepare_image(data, "pixels")
            assert info.value.key == rej.key, path.name
            continue
        assert fast == records.prepare_image(data, "pixels"), path.name
    rotated = records.prepare_image((mixed["root"] / "images" / "rotated.jpg").read_bytes(), "structure")
    assert rotated.exif_rotated and (rotated.width, rotated.height) == (60, 20)
