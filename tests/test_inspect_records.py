"""odpipe inspect: read records back and prove they match the CSV they came from."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from odpipe.errors import UserError
from odpipe.inspect_records import inspect_records


def test_round_trip_matches_csv(records, split_dir, label_map_path):
    """CSV -> records (the shared session fixture, multi-process DirectRunner) -> inspect --csv."""
    for side in ("train", "eval"):
        report = inspect_records(records[side], label_map_path=str(label_map_path), csv_path=str(split_dir / f"{side}.csv"))
        assert report["differences"] == [] and report["matches_csv"] is True
        rows = list(csv.DictReader(open(split_dir / f"{side}.csv", encoding="utf-8")))
        assert report["images"] == len({r["filename"] for r in rows})
        assert report["objects"] == sum(1 for r in rows if r["class"])
        assert sum(report["classes"].values()) == report["objects"]
        summary = json.loads(open(records[side].replace("-*.tfrecord", ".summary.json")).read())
        assert summary["images"] == report["images"] and summary["objects"] == report["objects"]
        assert summary["rejected"] == [] and len(report["files"]) == 2


def _edit_csv(src, dst, change):
    rows = list(csv.reader(open(src, encoding="utf-8")))
    change(rows)
    with open(dst, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return str(dst)


def test_differences_are_found_and_exit_non_zero(records, split_dir, tmp_path, capsys):
    from odpipe.cli import main

    src = split_dir / "train.csv"
    header = next(csv.reader(open(src, encoding="utf-8")))
    xmin = header.index("xmin")
    first_box = next(i for i, r in enumerate(csv.reader(open(src, encoding="utf-8"))) if i and r[3])

    def shift_box(rows):
        rows[first_box][xmin] = str(float(rows[first_box][xmin]) + 3)

    def add_image(rows):
        rows.append(["ghost.jpg", "10", "10", "", "", "", "", "", "0", "0"])

    shifted = _edit_csv(src, tmp_path / "shifted.csv", shift_box)
    report = inspect_records(records["train"], csv_path=shifted)
    assert len(report["differences"]) == 1 and "differs from the CSV" in report["differences"][0]
    extra = _edit_csv(src, tmp_path / "extra.csv", add_image)
    report = inspect_records(records["train"], csv_path=extra)
    assert report["differences"] == ["ghost.jpg: in the CSV but not in the records"]
    rc = main(["inspect", records["train"], "--csv", extra])
    out, err = capsys.readouterr()
    assert rc == 1 and "matches" in out and "NO" in out and "ghost.jpg" in err
    rc = main(["inspect", records["train"], "--csv", str(src), "--json"])
    out, _ = capsys.readouterr()
    assert rc == 0 and json.loads(out)["matches_csv"] is True


def test_label_map_mismatch_and_corrupt_file(records, tmp_path):
    import glob

    from odpipe.label_map import format_label_map

    files = sorted(glob.glob(records["eval"]))
    swapped_path = tmp_path / "swapped.pbtxt"
    names = ["circle", "square", "triangle"]
    swapped_path.write_text(format_label_map({i + 1: n for i, n in enumerate(reversed(names))}))
    report = inspect_records(records["eval"], label_map_path=str(swapped_path))
    assert any("the label map says" in d for d in report["differences"])

    broken = tmp_path / "broken-00000-of-00001.tfrecord"
    shutil.copy(files[0], broken)
    data = bytearray(broken.read_bytes())
    data[40] ^= 0xFF
    broken.write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupt TFRecord"):
        inspect_records(str(tmp_path / "broken-*.tfrecord"))
    with pytest.raises(UserError, match="no TFRecord file matches"):
        inspect_records(str(tmp_path / "nothing-*.tfrecord"))
