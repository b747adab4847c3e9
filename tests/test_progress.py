"""Progress in a log: plain lines at most every 30 s or 10 % (done/total, rate, ETA), on a fake clock;
and the stages write them when stderr is not a terminal (a pipeline step's log)."""

from __future__ import annotations

import io
import sys

from odpipe import progress
from odpipe.progress import LineProgress, progress_bar


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_line_every_ten_percent_with_rate_and_eta():
    clock, out = Clock(), io.StringIO()
    with LineProgress(200, "evaluate", "img", stream=out, clock=clock) as bar:
        for _ in range(200):
            clock.now += 0.5  # 2 img/s
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert lines[0] == "evaluate: 20/200 img (10%), 2.0 img/s, ETA 1m30s"
    assert lines[-1] == "evaluate: 200/200 img (100%), 2.0 img/s, ETA 0s"
    assert len(lines) == 10  # 10 %, 20 %, ... 90 %, and the end


def test_a_slow_stage_gets_a_line_every_thirty_seconds_and_a_quick_one_none():
    clock, out = Clock(), io.StringIO()
    bar = LineProgress(10_000, "tfrecord", "img", stream=out, clock=clock)
    for _ in range(300):  # 5 minutes at one image every second: 30 lines would be 10 per %
        clock.now += 1.0
        bar.update(1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and lines[0] == "tfrecord: 30/10000 img (0%), 1.0 img/s, ETA 2h46m"
    quick = io.StringIO()
    with LineProgress(50, "csv", "xml", stream=quick, clock=Clock()) as fast:  # no time passes
        fast.update(50)
    assert quick.getvalue() == ""
    unknown = io.StringIO()
    clock = Clock()
    with LineProgress(None, "predict", "img", stream=unknown, clock=clock) as bar:
        clock.now += 31
        bar.update(7)
    assert unknown.getvalue().splitlines()[0] == "predict: 7 img, 0.2 img/s, 31s so far"


def test_a_bar_on_a_terminal_lines_in_a_log(monkeypatch):
    from tqdm import tqdm

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert isinstance(progress_bar(10, "csv", "xml"), LineProgress)
    assert not isinstance(progress_bar(10, "csv", "xml", enabled=False), LineProgress)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert isinstance(progress_bar(10, "csv", "xml"), tqdm)


def test_stages_write_progress_lines_into_a_log(tmp_path, capsys, monkeypatch):
    """Before, the csv and split stages were silent off a terminal until they ended."""
    from odpipe.annotations import xml_to_csv
    from odpipe.sample_data import write_sample_data
    from odpipe.split import split_csv

    write_sample_data(str(tmp_path / "d"), images=10, seed=1)
    monkeypatch.setattr(progress, "LINE_GAP", 0.0)  # a tiny stage is quick: allow its lines
    xml_to_csv(str(tmp_path / "d" / "annotations"), str(tmp_path / "labels.csv"), images_dir=str(tmp_path / "d" / "images"))
    err = capsys.readouterr().err
    assert "csv: 1/10 xml (10%)" in err and "csv: 10/10 xml (100%)" in err and "\r" not in err
    split_csv(str(tmp_path / "labels.csv"), str(tmp_path / "split"), images_dir=str(tmp_path / "d" / "images"))
    assert "split: hashing: 10/10 img (100%)" in capsys.readouterr().err
