"""Generic behaviour of the `odpipe` command: help, bad usage, user errors, lazy imports."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys

import pytest

from odpipe import cli
from odpipe.cli import COMMANDS, main


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "-h"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: odpipe {command}")
    assert COMMANDS[command][1] in out


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["-h"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out
    assert main([]) == 2  # no command: help, and a usage exit code


@pytest.mark.parametrize(
    "argv",
    [
        ["no-such-command"],
        ["csv"],  # missing ANNOTATIONS_DIR and -o
        ["split", "labels.csv"],  # missing -o
        ["split", "labels.csv", "-o", "out", "--eval-fraction", "a fifth"],
        ["labelmap", "labels.csv", "-o", "m.pbtxt", "--no-such-option"],
    ],
)
def test_bad_usage_exits_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, not usage + error
    assert re.fullmatch(r"odpipe( [a-z-]+)?: error: .+ \(see odpipe( [a-z-]+)? -h\)\n", err), err
    if argv[0] in COMMANDS:
        assert err.startswith(f"odpipe {argv[0]}: error: ") and f"(see odpipe {argv[0]} -h)" in err


def test_user_error_is_one_line_exit_2_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "odpipe", "csv", str(tmp_path / "missing"), "-o", str(tmp_path / "labels.csv")],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "STORAGE_EMULATOR_HOST"},
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("odpipe csv: error: ") and str(tmp_path / "missing") in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_interrupt_exits_130(monkeypatch, capsys):
    import odpipe.label_map

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(odpipe.label_map, "run", interrupted)
    assert main(["labelmap", "x.csv", "-o", "m.pbtxt"]) == 130
    assert capsys.readouterr().err == "odpipe labelmap: interrupted\n"


def test_annotation_commands_do_not_import_tensorflow(tmp_path):
    code = f"""
import sys
from odpipe.cli import main
from odpipe.sample_data import write_sample_data
write_sample_data({str(tmp_path)!r}, images=4, seed=1)
d = {str(tmp_path)!r}
assert main(["csv", d + "/annotations", "-o", d + "/l.csv", "--images-dir", d + "/images"]) == 0
assert main(["split", d + "/l.csv", "-o", d + "/split", "--eval-fraction", "0.5"]) == 0
assert main(["labelmap", d + "/l.csv", "-o", d + "/m.pbtxt"]) == 0
heavy = sorted(m for m in ("tensorflow", "apache_beam", "kfp", "official") if m in sys.modules)
print("HEAVY", heavy)
"""
    # outside the tests (no GCS emulator), odpipe.storage does not touch Beam for local paths
    env = {k: v for k, v in os.environ.items() if k != "STORAGE_EMULATOR_HOST"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout


def test_command_modules_exist():
    import importlib.util

    for command, (module, _) in COMMANDS.items():
        assert importlib.util.find_spec(module) is not None, f"{command}: module {module} is missing"
    assert cli.build_parser().prog == "odpipe"


def test_first_line_of_library_errors():
    from odpipe.errors import first_line

    assert first_line(ValueError("\n  bad value  \nTraceback ...")) == "bad value"
    assert first_line(AssertionError()) == "AssertionError"  # an empty message is not an IndexError
    assert first_line(OSError("x" * 50), limit=10) == "x" * 10


def test_tensorflow_log_lines_stay_off_stderr(tmp_path):
    """A stage that starts TensorFlow (device set-up: the "failed call to cuInit" line on a CPU-only
    machine) and then fails prints only odpipe's one line."""
    code = """
import sys
import odpipe.label_map
from odpipe.cli import main
from odpipe.errors import UserError

def run(args):
    import tensorflow as tf
    tf.config.list_physical_devices()
    tf.constant(1.0) + 1.0
    raise UserError("x.csv: a bad input; fix it")

odpipe.label_map.run = run
sys.exit(main(["labelmap", "x.csv", "-o", "m.pbtxt"]))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "STORAGE_EMULATOR_HOST")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "odpipe labelmap: error: x.csv: a bad input; fix it\n", result.stderr


def _sample(tmp_path):
    from odpipe.sample_data import write_sample_data

    write_sample_data(str(tmp_path / "data"), images=4, seed=1)
    d = str(tmp_path / "data")
    assert main(["csv", d + "/annotations", "-o", d + "/l.csv", "--images-dir", d + "/images"]) == 0
    return d


def _one_line(capsys, *must_contain):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for text in must_contain:
        assert text in err, err
    return err


def test_output_where_a_file_stands_is_one_line(tmp_path, capsys):
    d = _sample(tmp_path)
    capsys.readouterr()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = str(blocker / "sub")
    cases = {
        "csv": ["csv", d + "/annotations", "-o", out + "/l.csv", "--images-dir", d + "/images"],
        "split": ["split", d + "/l.csv", "-o", out],
        "labelmap": ["labelmap", d + "/l.csv", "-o", out + "/m.pbtxt"],
        "sample-data": ["sample-data", out, "--images", "2"],
        "predict": ["predict", "--model", str(tmp_path / "no-model"), d + "/images", "-o", out],
    }
    for command, argv in cases.items():
        assert main(argv) == 2, command
        _one_line(capsys, f"odpipe {command}: error: {blocker}: a file stands where a folder is needed; move that file or")
    assert main(["csv", d + "/annotations", "-o", d, "--images-dir", d + "/images"]) == 2  # -o names a folder
    _one_line(capsys, f"{d}: Is a directory; give a file path, not a folder")


def test_output_folder_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch):
    """Works as root too: the write fails through odpipe.storage's own file access."""
    from odpipe import storage

    d = _sample(tmp_path)
    capsys.readouterr()
    locked = tmp_path / "locked"
    locked.mkdir()
    real_open = open

    def deny(path, *args, **kwargs):
        if str(path).startswith(str(locked)) and any(m in (args[0] if args else kwargs.get("mode", "r")) for m in "wxa"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(storage, "open", deny, raising=False)
    os.chmod(locked, 0o555)
    try:
        cases = {
            "csv": ["csv", d + "/annotations", "-o", str(locked / "l.csv"), "--images-dir", d + "/images"],
            "split": ["split", d + "/l.csv", "-o", str(locked / "split"), "--images-dir", d + "/images"],
            "labelmap": ["labelmap", d + "/l.csv", "-o", str(locked / "m.pbtxt")],
            "sample-data": ["sample-data", str(locked), "--images", "2"],
            "predict": ["predict", "--model", str(tmp_path / "no-model"), d + "/images", "-o", str(locked / "p")],
        }
        for command, argv in cases.items():
            assert main(argv) == 2, command
            _one_line(capsys, f"odpipe {command}: error: {locked}", "Permission denied; fix the permissions or choose another path")
    finally:
        os.chmod(locked, 0o755)


def test_bad_values_are_one_line(tmp_path, capsys):
    d = _sample(tmp_path)
    capsys.readouterr()
    assert main(["labelmap", d + "/l.csv", "-o", d + "/m.pbtxt", "--extend", d]) == 2
    _one_line(capsys, f"odpipe labelmap: error: {d}: is a folder, not a label map")
    assert main(["split", d + "/l.csv", "-o", d + "/split", "--seed", "-1"]) == 2
    _one_line(capsys, "odpipe split: error: --seed -1: must be 0 or more")
    assert main(["sample-data", d + "/more", "--seed", "-1"]) == 2
    _one_line(capsys, "odpipe sample-data: error: --seed -1: must be 0 or more")
    for images in ("0", "-3"):
        assert main(["sample-data", d + "/more", "--images", images]) == 2
        _one_line(capsys, f"--images {images}: need at least one image")
    for value in ("0", "-1"):
        assert main(["predict", "--model", d, d + "/images", "-o", d + "/p", "--batch-size", value]) == 2
        _one_line(capsys, f"--batch-size {value}: must be at least 1")
    for value in ("-0.1", "1.5", "nan"):
        assert main(["predict", "--model", d, d + "/images", "-o", d + "/p", "--threshold", value]) == 2
        _one_line(capsys, f"--threshold {value}: must be between 0 and 1")
    for value in ("0", "1", "-0.2"):
        assert main(["split", d + "/l.csv", "-o", d + "/split", "--eval-fraction", value]) == 2
        _one_line(capsys, f"--eval-fraction {value}")


def test_os_error_without_a_stage_check_is_one_line(monkeypatch, capsys):
    import odpipe.label_map

    def full_disk(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/m.pbtxt")

    monkeypatch.setattr(odpipe.label_map, "run", full_disk)
    assert main(["labelmap", "x.csv", "-o", "m.pbtxt"]) == 2
    assert capsys.readouterr().err == (
        "odpipe labelmap: error: /data/out/m.pbtxt: No space left on device; the disk is full; free space or write elsewhere\n"
    )
