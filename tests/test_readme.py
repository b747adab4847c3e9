"""The README is executed: its quick-start, stage-by-stage and local-pipeline commands, as written.

The README marks each block this test runs with `<!-- readme-test: NAME ... -->` on the line
before it, so the README's commands and this test's list are one list. A tiny run changes only
sizes, through the flags the README itself uses (`SIZES`): each must occur in its block, so an
edited README cannot slip past the test. The commands run in a shell, in a scratch folder, with
`.venv/bin` first on PATH, the way a user types them after `make setup`.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
MARK = re.compile(r"<!-- readme-test: ([a-z-]+)[^>]*-->\s*```bash\n(.*?)```", re.S)
# block -> (as written, as run): the sizes of a tiny run, through the README's own flags
SIZES = {
    "quick-start": [],
    "stages": [("--images 200", "--images 24"), ("--steps 800", "--steps 20")],
    "local-pipeline": [("--steps 800", "--steps 20")],
}
TINY_DEMO = "--images 24 --steps 20"  # make demo's documented DEMO_FLAGS
NOT_RUN = {"make test"}  # the suite that runs this test


def blocks() -> dict[str, list[str]]:
    """NAME -> the block's commands (continuation lines joined), in README order."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    found = {}
    for name, body in MARK.findall(text):
        joined = re.sub(r"\\\n\s*", " ", body)
        found[name] = [line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]
    return found


def sized(name: str, commands: list[str]) -> list[str]:
    out = []
    for command in commands:
        for written, tiny in SIZES[name]:
            command = command.replace(written, tiny)
        out.append(command)
    for written, _ in SIZES[name]:
        assert any(written in c for c in commands), f"README block {name!r} no longer has {written!r}; update SIZES"
    return out


def shell(command: str, cwd: str, env: dict | None = None, timeout: int = 900) -> str:
    full = {**os.environ, "PATH": os.path.join(ROOT, ".venv", "bin") + os.pathsep + os.environ["PATH"], **(env or {})}
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"README command failed (exit {done.returncode}): {command}\n{output[-3000:]}"
    assert "Traceback (most recent call last)" not in output, f"{command}\n{output[-3000:]}"
    return output


def test_the_readme_marks_the_blocks_this_test_runs():
    assert list(blocks()) == list(SIZES)
    assert all(blocks()[name] for name in SIZES)


@pytest.mark.slow
def test_the_stage_commands_and_the_local_pipeline_run_as_written(tmp_path):
    """The stage-by-stage block, then the local-pipeline block on the same folders (as the README says)."""
    found = blocks()
    outputs = {}
    for name in ("stages", "local-pipeline"):
        for command in sized(name, found[name]):
            outputs[command] = shell(command, str(tmp_path))
    for path in ("work/labels.csv", "work/label_map.pbtxt", "work/data-report/data_report.html",
                 "work/data-report/data_stats.json", "work/export/saved_model/saved_model.pb",
                 "work/export/model.tflite", "work/report/report.html", "work/predictions/predictions.json",
                 "models/current.json", "models/versions/0001/export/saved_model/saved_model.pb"):
        assert (tmp_path / path).is_file(), path
    assert len(list((tmp_path / "work" / "predictions" / "annotations").glob("*.xml"))) == 24
    listing = next(out for command, out in outputs.items() if command.startswith("odpipe models list"))
    assert "* 0001" in listing
    run = next(out for command, out in outputs.items() if command.startswith("odpipe run"))
    assert "published: version 0001" in run and "report:" in run and "data report:" in run


@pytest.mark.slow
def test_quick_start_make_demo_runs_as_written(tmp_path):
    commands = [c for c in blocks()["quick-start"] if c.split("#")[0].strip() not in NOT_RUN]
    assert [c.split("#")[0].strip() for c in commands] == ["make demo"]
    out = shell(commands[0], ROOT, env={"DEMO_DIR": str(tmp_path / "demo"), "DEMO_FLAGS": TINY_DEMO})
    assert "odpipe demo finished" in out and "report.html: " in out
    assert (tmp_path / "demo" / "models" / "current.json").is_file()
