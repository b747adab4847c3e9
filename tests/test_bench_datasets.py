"""The benchmark datasets and the quality-per-minute table's plumbing (the benchmarks themselves run in `make bench`)."""

from __future__ import annotations


def test_crowded_scenes_are_labelimg_data_with_many_small_boxes(tmp_path):
    import pandas as pd

    from odpipe.annotations import xml_to_csv
    from odpipe.bench.datasets import CROWDED_CLASSES, write_crowded

    folder = write_crowded(str(tmp_path / "crowded"), images=3, seed=1)
    csv = tmp_path / "labels.csv"
    xml_to_csv(f"{folder}/annotations", str(csv), images_dir=f"{folder}/images")
    rows = pd.read_csv(csv)
    per_image = rows.groupby("filename").size()
    assert len(per_image) == 3 and per_image.min() >= 12 and per_image.max() <= 30
    assert set(rows["class"]) <= set(CROWDED_CLASSES)
    sides = ((rows.xmax - rows.xmin) * (rows.ymax - rows.ymin)) ** 0.5
    assert sides.max() <= 56 and (rows.xmax <= rows.width).all() and (rows.ymax <= rows.height).all()


def test_the_table_plans_the_curve_and_reports_the_share_of_the_budget():
    from odpipe.bench.minutes import _plan, _row

    assert _plan(["sample", "raccoon"], 10, "raccoon:5,20") == [("sample", 10), ("raccoon", 10), ("raccoon", 5.0),
                                                                ("raccoon", 20.0)]
    assert _plan(["sample"], 10, "raccoon:5,20") == [("sample", 10)]  # a curve for a dataset not run: nothing
    row = _row("raccoon", 10, "after", {"steps": 8066, "minutes": 9.86, "process_minutes": 9.89, "image_size": 128,
                                        "mAP@0.5": 0.881, "mAP": 0.401})
    assert row == "| raccoon | 10 | after | 8066 | 9.86 (98.6 %) | 9.89 | 128 | 0.881 | 0.401 |"
    assert "failed: boom" in _row("raccoon", 10, "before", {"error": "boom", "process_minutes": 0.1})


def test_repeated_runs_are_summed_up_as_median_and_range():
    from odpipe.bench.minutes import spread

    def run(version, ap50, steps, **extra):
        return {"dataset": "crowded", "budget_minutes": 5.0, "version": version, "mAP@0.5": ap50, "mAP": ap50 / 2,
                "steps": steps, **extra}

    results = [run("after", 0.84, 600), run("new", 0.86, 640), run("after", 0.64, 630), run("new", 0.79, 620),
               run("after", 0.67, 610), run("new", 0.0, 0, error="boom")]
    assert spread(results) == ["| crowded | 5 | after | 3 | 0.670 | 0.640–0.840 | 0.335 | 610 |",
                               "| crowded | 5 | new | 2 | 0.825 | 0.790–0.860 | 0.412 | 630 |"]
