"""odpipe split: by image, duplicate-safe, stratified, deterministic."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from odpipe.annotations import CSV_COLUMNS, format_labels_csv, read_labels_csv
from odpipe.cli import main
from odpipe.errors import UserError
from odpipe.split import split_csv

COMMON = ["car", "person", "bike", "dog"]


def synthetic_csv(path, n=300, seed=1):
    """Multi-label images with imbalanced classes, object-less images and two rare classes."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        k = int(rng.integers(0, 7))
        if k == 0:
            rows.append([f"img{i:04d}.jpg", 100, 80, "", None, None, None, None, 0, 0])
        for _ in range(k):
            cls = COMMON[int(rng.choice(4, p=[0.5, 0.3, 0.12, 0.08]))]
            rows.append([f"img{i:04d}.jpg", 100, 80, cls, 1, 2, 30.5, 40, 0, 0])
    for i, cls in [(5, "rare2"), (17, "rare2"), (3, "rare3"), (8, "rare3"), (9, "rare3")]:
        rows.append([f"img{i:04d}.jpg", 100, 80, cls, 3, 3, 9, 9, 0, 0])
    rows.sort(key=lambda r: r[0])
    path.write_text(format_labels_csv(rows), encoding="utf-8")
    return path


def sides(outdir):
    return {s: read_labels_csv(str(outdir / f"{s}.csv")) for s in ("train", "eval")}


def test_split_by_image_stratified_and_complete(tmp_path):
    src = synthetic_csv(tmp_path / "labels.csv")
    summary = split_csv(str(src), str(tmp_path / "out"), eval_fraction=0.2, seed=0)
    parts = sides(tmp_path / "out")
    full = read_labels_csv(str(src))
    # nothing lost, nothing duplicated, same CSV format, original row order kept
    assert sorted(map(tuple, full.astype(str).values)) == sorted(
        map(tuple, np.concatenate([p.astype(str).values for p in parts.values()]))
    )
    assert (tmp_path / "out/train.csv").read_text().splitlines()[0] == ",".join(CSV_COLUMNS)
    assert set(parts["train"]["filename"]).isdisjoint(parts["eval"]["filename"])
    # every class with >= 2 images on both sides, including the rare ones
    for cls in COMMON + ["rare2", "rare3"]:
        assert (parts["train"]["class"] == cls).any() and (parts["eval"]["class"] == cls).any(), cls
    # per-class object fractions close to the requested 20 % for the common classes
    for cls in COMMON:
        n_eval = int((parts["eval"]["class"] == cls).sum())
        share = n_eval / int((full["class"] == cls).sum())
        assert abs(share - 0.2) < 0.04, (cls, share)
    # object-less images are split too, roughly in proportion
    empty_eval, empty_train = summary["eval"]["empty_images"], summary["train"]["empty_images"]
    assert empty_eval > 0 and abs(empty_eval / (empty_eval + empty_train) - 0.2) < 0.1
    assert 0.15 < summary["eval"]["images"] / full["filename"].nunique() < 0.27
    assert summary["warnings"] == []


def test_deterministic_per_seed(tmp_path):
    src = synthetic_csv(tmp_path / "labels.csv", n=80)
    texts = {}
    for run, seed in (("a", 7), ("b", 7), ("c", 8)):
        split_csv(str(src), str(tmp_path / run), eval_fraction=0.3, seed=seed)
        texts[run] = (tmp_path / run / "eval.csv").read_text()
    assert texts["a"] == texts["b"]
    assert texts["a"] != texts["c"]


def make_image(path, colour):
    Image.new("RGB", (16, 12), colour).save(path, format="PNG")


def test_byte_identical_images_never_straddle(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    rng = np.random.default_rng(0)
    for i in range(60):
        make_image(images / f"u{i:03d}.png", (i, 3 * i % 256, 7))
        rows.append([f"u{i:03d}.png", 16, 12, COMMON[i % 4], 1, 1, 8, 8, 0, 0])
    # 10 originals, each copied 2 or 3 times under other names with *different* annotations
    for d in range(10):
        make_image(images / f"dup{d}_0.png", (250, d, 250))
        for c in range(1, 2 + d % 2 + 1):
            (images / f"dup{d}_{c}.png").write_bytes((images / f"dup{d}_0.png").read_bytes())
        for c in range(0, 2 + d % 2 + 1):
            cls = COMMON[int(rng.integers(4))]
            rows.append([f"dup{d}_{c}.png", 16, 12, cls, c + 1, 1, 9, 9, 0, 0])
    src = tmp_path / "labels.csv"
    src.write_text(format_labels_csv(rows))
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in images.iterdir()}
    for seed in range(4):
        out = tmp_path / f"out{seed}"
        summary = split_csv(str(src), str(out), eval_fraction=0.3, seed=seed, images_dir=str(images))
        parts = sides(out)
        hashes = {s: {digest[f] for f in parts[s]["filename"]} for s in parts}
        assert hashes["train"].isdisjoint(hashes["eval"]), seed
        assert summary["duplicates_by"] == "sha256" and summary["grouped_duplicates"] == 35


def test_fallback_without_images_dir_groups_identical_annotations(tmp_path):
    rows = []
    for i in range(40):
        rows.append([f"a{i:02d}.jpg", 50, 40, COMMON[i % 4], i, 1, 45, 30, 0, 0])
        rows.append([f"copy_of_a{i:02d}.jpg", 50, 40, COMMON[i % 4], i, 1, 45, 30, 0, 0])
    for i in range(6):  # object-less images of one size are NOT lumped together
        rows.append([f"bg{i}.jpg", 50, 40, "", None, None, None, None, 0, 0])
    src = tmp_path / "labels.csv"
    src.write_text(format_labels_csv(rows))
    summary = split_csv(str(src), str(tmp_path / "out"), eval_fraction=0.25, seed=0)
    parts = sides(tmp_path / "out")
    for i in range(40):
        in_eval = {f"a{i:02d}.jpg" in set(parts["eval"]["filename"]), f"copy_of_a{i:02d}.jpg" in set(parts["eval"]["filename"])}
        assert len(in_eval) == 1
    assert summary["duplicates_by"] == "annotations" and summary["groups"] == 46
    assert summary["eval"]["empty_images"] >= 1


def test_rare_class_in_two_images_reaches_both_sides(tmp_path):
    rows = [[f"c{i:03d}.jpg", 60, 60, "car", 1, 1, 9, 9, 0, 0] for i in range(100)]
    # the rare class rides along with many cars in exactly two images
    for k, name in enumerate(("c010.jpg", "c011.jpg")):
        rows += [[name, 60, 60, "tiger", 20 + k, 20, 40, 40, 0, 0]] + [[name, 60, 60, "car", 2, 2, 8, 8, 0, 0]] * 5
    src = tmp_path / "labels.csv"
    src.write_text(format_labels_csv(rows))
    for seed in range(5):
        summary = split_csv(str(src), str(tmp_path / "out"), eval_fraction=0.1, seed=seed)
        assert summary["train"]["classes"]["tiger"] == 1 and summary["eval"]["classes"]["tiger"] == 1


def test_single_image_class_warned(tmp_path):
    rows = [[f"c{i}.jpg", 60, 60, "car", 1, 1, 9, 9, 0, 0] for i in range(10)] + [["c3.jpg", 60, 60, "yak", 1, 1, 9, 9, 0, 0]]
    src = tmp_path / "labels.csv"
    src.write_text(format_labels_csv(rows))
    summary = split_csv(str(src), str(tmp_path / "out"), eval_fraction=0.2)
    assert any("'yak' is in only one image" in w for w in summary["warnings"])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5])
def test_bad_fraction(tmp_path, fraction):
    src = synthetic_csv(tmp_path / "labels.csv", n=10)
    with pytest.raises(UserError, match="--eval-fraction"):
        split_csv(str(src), str(tmp_path / "out"), eval_fraction=fraction)


def test_too_few_images_and_missing_image(tmp_path):
    src = tmp_path / "labels.csv"
    src.write_text(format_labels_csv([["a.jpg", 9, 9, "x", 1, 1, 5, 5, 0, 0], ["a.jpg", 9, 9, "y", 1, 1, 5, 5, 0, 0]]))
    with pytest.raises(UserError, match=r"only 1 image\(s\)"):
        split_csv(str(src), str(tmp_path / "out"))
    src.write_text(format_labels_csv([["a.jpg", 9, 9, "x", 1, 1, 5, 5, 0, 0], ["b.jpg", 9, 9, "x", 1, 1, 5, 5, 0, 0]]))
    images = tmp_path / "images"
    images.mkdir()
    make_image(images / "a.jpg", (1, 2, 3))
    (images / "b.jpg").write_bytes((images / "a.jpg").read_bytes())
    with pytest.raises(UserError, match=r"only 1 distinct image"):
        split_csv(str(src), str(tmp_path / "out"), images_dir=str(images))
    os.remove(images / "b.jpg")
    with pytest.raises(UserError, match=r"b\.jpg: image listed in the CSV not found"):
        split_csv(str(src), str(tmp_path / "out"), images_dir=str(images))


def test_unreadable_image_is_a_user_error(tmp_path):
    src = tmp_path / "labels.csv"
    src.write_text(format_labels_csv([["a.jpg", 9, 9, "x", 1, 1, 5, 5, 0, 0], ["b.jpg", 9, 9, "x", 1, 1, 5, 5, 0, 0]]))
    images = tmp_path / "images"
    images.mkdir()
    make_image(images / "a.jpg", (1, 2, 3))
    (images / "b.jpg").mkdir()  # read error other than "not found" (as permissions would be, for non-root)
    with pytest.raises(UserError, match=r"b\.jpg: cannot read the image \(IsADirectoryError"):
        split_csv(str(src), str(tmp_path / "out"), images_dir=str(images))


def test_cli_prints_per_class_counts(tmp_path, capsys):
    src = synthetic_csv(tmp_path / "labels.csv", n=60)
    assert main(["split", str(src), "-o", str(tmp_path / "out"), "--eval-fraction", "0.25", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "train obj/img" in out and "eval obj/img" in out
    for cls in COMMON:
        assert any(line.startswith(cls) for line in out.splitlines()), cls
    assert (tmp_path / "out/train.csv").exists() and (tmp_path / "out/eval.csv").exists()
    assert main(["split", str(src), "-o", str(tmp_path / "out"), "--eval-fraction", "1"]) == 2
    assert "--eval-fraction" in capsys.readouterr().err


def test_repair_moves_smallest_groups_without_emptying_a_side():
    from odpipe.split import _repair

    # classes: a (3 groups), b (2 groups), c (1 group); everything starts in train
    counts = np.array([[5, 0, 0], [1, 0, 0], [2, 3, 1], [0, 1, 0], [0, 0, 0]])
    sizes = np.ones(5, dtype=np.int64)
    side = np.zeros(5, dtype=np.int64)
    _repair(side, counts, sizes)
    present = counts > 0
    for c in (0, 1):
        assert present[side == 0, c].any() and present[side == 1, c].any(), c
    assert side.tolist() == [0, 1, 0, 1, 0]  # the smallest groups with the class moved
    # nothing to fix: a 2-group split stays as it is; an empty side gets one group
    side = np.array([0, 1])
    _repair(side, np.array([[1], [1]]), np.ones(2, dtype=np.int64))
    assert side.tolist() == [0, 1]
    side = np.array([1, 1, 1])
    _repair(side, np.zeros((3, 1), dtype=np.int64), np.ones(3, dtype=np.int64))
    assert sorted(side.tolist()) == [0, 1, 1]


class _Terminal:
    """A stand-in stderr that says it is a terminal and keeps what is written."""

    def __init__(self):
        self.text = ""

    def isatty(self):
        return True

    def write(self, text):
        self.text += text

    def flush(self):
        pass


def test_progress_on_a_terminal_only(tmp_path, monkeypatch, capsys):
    import sys

    from odpipe.annotations import xml_to_csv
    from odpipe.sample_data import write_sample_data

    write_sample_data(str(tmp_path / "d"), images=6, seed=2)
    d = tmp_path / "d"
    xml_to_csv(str(d / "annotations"), str(tmp_path / "l.csv"), images_dir=str(d / "images"))
    split_csv(str(tmp_path / "l.csv"), str(tmp_path / "s"), images_dir=str(d / "images"))
    assert capsys.readouterr().err == ""  # not a terminal (a log, a pipeline step): no progress lines
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    xml_to_csv(str(d / "annotations"), str(tmp_path / "l.csv"), images_dir=str(d / "images"))
    split_csv(str(tmp_path / "l.csv"), str(tmp_path / "s"), images_dir=str(d / "images"))
    assert "\rcsv:" in terminal.text and "/6 [" in terminal.text and "xml/s" in terminal.text
    assert "\rsplit: hashing:" in terminal.text and "img/s" in terminal.text
