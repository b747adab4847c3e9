"""Issue 9, the records stage: no empty record sets, an atomic shard set, literal paths, one-line OS
errors, Ctrl-C, stale temporary folders, progress. Each test reproduces the defect on tiny images."""

from __future__ import annotations

import errno
import glob
import io
import os
import sys

import numpy as np
import pytest
from PIL import Image
from test_records import pick, write_csv, write_images, write_map

from odpipe import records, storage
from odpipe.cli import main
from odpipe.errors import UserError
from odpipe.inspect_records import inspect_records
from odpipe.records import example as example_module
from odpipe.records import output, tfrecord

OLD = ("rgb.jpg", "gray.jpg", "prog.JPG")
NEW = ("plain.png", "empty.jpg")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability")
    rows = write_images(root / "images")
    return {"root": root, "images": str(root / "images"), "map": write_map(root / "m.pbtxt", ["cat", "dog"]),
            "old": write_csv(root / "old.csv", pick(rows, *OLD)), "new": write_csv(root / "new.csv", pick(rows, *NEW))}


def _names(files):
    import tensorflow as tf

    return sorted(tf.train.Example.FromString(r).features.feature["image/filename"].bytes_list.value[0].decode()
                  for f in files for r in tf.data.TFRecordDataset(f).as_numpy_iterator())


def _tfrecord(args, capsys):
    rc = main(["tfrecord", *args])
    return rc, capsys.readouterr().err.strip().splitlines()


def test_no_example_written_is_an_error_and_keeps_the_old_set(data, tmp_path, capsys):
    prefix = str(tmp_path / "out" / "train")
    records.convert(data["old"], data["images"], data["map"], prefix)
    before = sorted(os.listdir(tmp_path / "out"))
    rc, err = _tfrecord([data["new"], "--images-dir", str(tmp_path / "wrong"), "--label-map", data["map"], "-o", prefix],
                        capsys)
    assert rc == 2 and len(err) == 1
    assert "0 of 2 images written; first rejection: empty.jpg: image file not found" in err[0] and "new.csv" in err[0]
    assert sorted(os.listdir(tmp_path / "out")) == before  # nothing replaced, no temporary folder left
    assert _names(records.shard_files(prefix + "-*.tfrecord")) == sorted(OLD)


class Killed(BaseException):
    """The writer process dies here (SIGKILL: no except or finally block of odpipe runs)."""


FILE_OPS = ("makedirs", "write_bytes", "write_text", "open_write", "delete", "rename", "replace", "remove_tree")


def _kill_at(monkeypatch, k):
    """Make the k-th file operation (0-based) kill the writer; returns the op counter."""
    count = {"n": 0}
    for name in FILE_OPS:
        real = getattr(storage, name)

        def op(*args, _real=real, **kwargs):
            if count["n"] == k:
                count["n"] += 1
                raise Killed()
            count["n"] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(storage, name, op)
    return count


def _visible(pattern):
    """What a reader (records.shard_files, inspect) sees: a set of names, or None when it refuses."""
    try:
        files = records.shard_files(pattern)
    except UserError as err:
        assert "incomplete" in str(err) or "no TFRecord file matches" in str(err) or "missing" in str(err)
        with pytest.raises(UserError):
            inspect_records(pattern)
        return None
    names = _names(files)
    assert inspect_records(pattern)["images"] == len(names)
    return names


@pytest.mark.parametrize("new_shards", [2, 3])  # a different and the same number of shards as the old set
def test_a_killed_writer_never_leaves_a_mixed_or_partial_set_and_reruns_clean_up(data, tmp_path, monkeypatch,
                                                                                  new_shards):
    """Kill the writer before every file operation of a run that replaces a set; a reader sees the old set,
    the new set, or refuses; a rerun removes the dead run's temporary folder and completes."""
    out = tmp_path / "out"
    prefix = str(out / "train")
    pattern = prefix + "-*.tfrecord"
    k, seen = 0, set()
    while True:
        monkeypatch.undo()
        for path in glob.glob(str(out / "*")) + glob.glob(str(out / ".*")):
            storage.delete([path])
        records.convert(data["old"], data["images"], data["map"], prefix, shards=3)
        monkeypatch.setattr(output.Staging, "discard", lambda self: None)  # a killed process cleans nothing
        count = _kill_at(monkeypatch, k)
        try:
            records.convert(data["new"], data["images"], data["map"], prefix, shards=new_shards)
            killed = False
        except Killed:
            killed = True
        visible = _visible(pattern)
        assert visible in (sorted(OLD), sorted(NEW), None), (k, visible)
        seen.add(tuple(visible) if visible else None)
        monkeypatch.undo()
        if not killed:
            assert visible == sorted(NEW)
            break
        # the rerun: the dead run's temporary folder (this test's pid stands for a dead one) is removed
        stale = glob.glob(str(out / ".train.tmp-*"))
        assert len(stale) == (k > 0), k  # from the first operation on, the dead run left its folder
        monkeypatch.setattr(output, "_alive", lambda pid: False)
        summary = records.convert(data["new"], data["images"], data["map"], prefix, shards=new_shards)
        assert summary["stale_temp_folders_removed"] == len(stale)
        assert not glob.glob(str(out / ".train.tmp-*")) and _visible(pattern) == sorted(NEW)
        k += 1
        assert count["n"] > k - 1
    assert k > 8 and {tuple(sorted(OLD)), tuple(sorted(NEW)), None} <= seen  # every phase was hit


def test_live_runs_temporary_folders_are_left_alone(data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    host = output._host()
    dead_pid = 2**22 + 12345
    assert not output._alive(dead_pid)
    (out / f".train.tmp-{host}-{dead_pid}-deadbeef").mkdir()
    (out / f".train.tmp-{host}-{dead_pid}-deadbeef" / "part-00000-of-00001.tfrecord").write_bytes(b"x" * 100)
    (out / f".train.tmp-{host}-{os.getpid()}-0badf00d").mkdir()  # a running process's
    (out / f".train.tmp-otherhost-{dead_pid}-0badf00d").mkdir()  # another machine's: may be running
    (out / f".trainer.tmp-{host}-{dead_pid}-deadbeef").mkdir()  # another prefix's
    summary = records.convert(data["old"], data["images"], data["map"], str(out / "train"))
    assert summary["stale_temp_folders_removed"] == 1
    assert sorted(os.listdir(out)) == sorted([f".train.tmp-{host}-{os.getpid()}-0badf00d",
                                              f".train.tmp-otherhost-{dead_pid}-0badf00d",
                                              f".trainer.tmp-{host}-{dead_pid}-deadbeef",
                                              "train-00000-of-00001.tfrecord", "train.summary.json"])


def test_incomplete_sets_are_refused_by_readers(data, tmp_path):
    prefix = str(tmp_path / "train")
    records.convert(data["old"], data["images"], data["map"], prefix, shards=3)
    os.remove(prefix + "-00001-of-00003.tfrecord")
    with pytest.raises(UserError, match="listed in .*train.summary.json but missing"):
        records.shard_files(prefix + "-*.tfrecord")
    os.remove(prefix + ".summary.json")
    with pytest.raises(UserError, match=r"incomplete shard set \(2 shard\(s\) of 3"):
        inspect_records(prefix + "-*.tfrecord")
    assert records.shard_files(prefix + "-00000-of-00003.tfrecord") == [prefix + "-00000-of-00003.tfrecord"]


def test_glob_characters_in_output_prefixes_are_plain_characters(data, tmp_path):
    """`-o 'out[v2]/train'` works; `-o 'w/rec*/train'` never touches w/rec1's shards."""
    bracket = str(tmp_path / "out[v2]" / "train")
    summary = records.convert(data["old"], data["images"], data["map"], bracket)
    assert summary["images"] == 3 and os.path.exists(bracket + "-00000-of-00001.tfrecord")
    assert _names(records.shard_files(bracket + "-*.tfrecord")) == sorted(OLD)
    assert inspect_records(bracket + "-*.tfrecord", csv_path=data["old"])["differences"] == []
    os.remove(bracket + ".summary.json")  # without the manifest, the prefix is still read literally
    assert _names(records.shard_files(bracket + "-*.tfrecord")) == sorted(OLD)

    other = tmp_path / "w" / "rec1"
    records.convert(data["old"], data["images"], data["map"], str(other / "train"), shards=2)
    before = sorted(os.listdir(other))
    star = str(tmp_path / "w" / "rec*" / "train")
    records.convert(data["new"], data["images"], data["map"], star)
    assert sorted(os.listdir(other)) == before
    assert sorted(os.listdir(tmp_path / "w" / "rec*")) == ["train-00000-of-00001.tfrecord", "train.summary.json"]
    records.convert(data["new"], data["images"], data["map"], star)  # a rerun replaces only its own files
    assert sorted(os.listdir(other)) == before


def test_os_errors_are_one_line(data, tmp_path, capsys, monkeypatch):
    base = [data["old"], "--images-dir", data["images"], "--label-map", data["map"], "-o"]
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    rc, err = _tfrecord(base + [str(blocker / "train")], capsys)
    assert rc == 2 and len(err) == 1 and "cannot write the records" in err[0] and "a file is in the way" in err[0]
    rc, err = _tfrecord(base + [str(tmp_path)], capsys)
    assert rc == 2 and len(err) == 1 and "is a folder" in err[0]

    def denied(path):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    with monkeypatch.context() as m:  # root may write anywhere: fail the code's own folder creation
        m.setattr(storage, "makedirs", denied)
        rc, err = _tfrecord(base + [str(tmp_path / "ro" / "train")], capsys)
    assert rc == 2 and len(err) == 1 and "Permission denied" in err[0] and "writable -o" in err[0]

    prefix = str(tmp_path / "full" / "train")
    records.convert(data["old"], data["images"], data["map"], prefix)
    before = sorted(os.listdir(tmp_path / "full"))
    for code, text in ((errno.ENOSPC, "No space left on device"), (errno.EFBIG, "File too large")):
        calls = {"n": 0}
        real = tfrecord.RecordWriter.write

        def write(self, record, _code=code, _text=text, calls=calls, real=real):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(_code, _text)
            return real(self, record)

        with monkeypatch.context() as m:
            m.setattr(tfrecord.RecordWriter, "write", write)
            rc, err = _tfrecord([data["new"], "--images-dir", data["images"], "--label-map", data["map"], "-o", prefix],
                                capsys)
        assert rc == 2 and len(err) == 1 and text in err[0] and "free space" in err[0], err
        assert sorted(os.listdir(tmp_path / "full")) == before  # the old set stands, no temporary folder


def test_inspect_one_line_errors(data, tmp_path, capsys):
    import tensorflow as tf

    rc = main(["inspect", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "is a folder" in err[0]
    bad = tmp_path / "bad.tfrecord"
    with tf.io.TFRecordWriter(str(bad)) as w:
        w.write(b"\xff\xff\xff not a protobuf")
    rc = main(["inspect", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "bad.tfrecord: a record is not a tf.train.Example" in err[0]


def test_ctrl_c_is_interrupted_rc_130_and_leaves_no_temporary_folder(data, tmp_path, capsys, monkeypatch):
    real = example_module.image_to_example
    calls = {"n": 0}

    def interrupted(item, raw, verify="pixels"):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(item, raw, verify)

    monkeypatch.setattr(example_module, "image_to_example", interrupted)
    for extra in ([], ["--direct_running_mode", "in_memory"]):  # local run, and Beam's DirectRunner
        calls["n"] = 0
        rc, err = _tfrecord([data["old"], "--images-dir", data["images"], "--label-map", data["map"],
                             "-o", str(tmp_path / "out" / "train"), *extra], capsys)
        assert rc == 130 and err == ["odpipe tfrecord: interrupted"], (extra, err)
        assert os.listdir(tmp_path / "out") == []


def test_progress_only_on_a_terminal(data, tmp_path, capsys, monkeypatch):
    records.convert(data["old"], data["images"], data["map"], str(tmp_path / "a"))
    assert capsys.readouterr().err == ""  # stderr is not a terminal here: quiet

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    records.convert(data["old"], data["images"], data["map"], str(tmp_path / "b"))
    shown = terminal.getvalue()
    assert "tfrecord" in shown and "3/3" in shown and "img/s" in shown


def test_a_truncated_jpeg_is_repaired_and_reported(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "images" / "cut.jpg").write_bytes(buf.getvalue()[:-500])
    csv_path = write_csv(tmp_path / "l.csv", [["cut.jpg", 80, 60, "cat", 1, 1, 50, 50, 0, 0],
                                              ["cut.jpg", 80, 60, "dog", 10, 10, 70, 50, 0, 0]])
    map_path = write_map(tmp_path / "m.pbtxt", ["cat", "dog"])
    rc = main(["tfrecord", csv_path, "--images-dir", str(tmp_path / "images"), "--label-map", map_path,
               "-o", str(tmp_path / "o" / "x")])
    out, err = capsys.readouterr()
    assert rc == 0 and "1 images, 2 objects" in out and "repaired 1" in out
    assert "repaired cut.jpg: truncated JPEG file (no end-of-image marker)" in err
