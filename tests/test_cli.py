"""Generic behaviour of the `odpipe` command: help, bad usage, user errors, lazy imports."""

from __future__ import annotations

import os
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
    assert "usage: odpipe" in capsys.readouterr().err


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
