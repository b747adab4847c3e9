"""Packaging as the ecosystem does it: ranges in the package, exact pins in the lock, one version,
only `odpipe` installed (the KFP front end used from the checkout), `odpipe --version`, lint clean."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib

import odpipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_the_package_declares_ranges_for_what_it_imports():
    project = _pyproject()["project"]
    names = {re.split(r"[\[<>=!~ ]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}
    for imported in ("tensorflow", "tf-models-official", "tf-keras", "apache-beam", "kfp", "pyyaml", "tqdm",
                     "google-crc32c", "flatbuffers", "protobuf", "pycocotools", "defusedxml", "pillow", "numpy", "fastapi",
                     "uvicorn"):
        assert imported in names, imported
    assert not any("==" in d for d in project["dependencies"])  # exact pins live in requirements.lock only
    lock = open(os.path.join(ROOT, "requirements.lock"), encoding="utf-8").read().lower()
    assert all(f"\n{n}==" in lock or f"\n{n.replace('-', '_')}==" in lock for n in names), "every dependency is locked"


def test_one_version_and_only_the_library_is_installed():
    config = _pyproject()
    assert config["project"]["dynamic"] == ["version"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "odpipe.__version__"}
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == ["odpipe*"]
    for name in ("cpu", "gpu"):
        text = open(os.path.join(ROOT, "images", f"{name}.Dockerfile"), encoding="utf-8").read()
        assert f"ARG VERSION={odpipe.__version__}" in text
    out = subprocess.run([sys.executable, "-m", "odpipe", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"odpipe {odpipe.__version__}"
    make = subprocess.run(["make", "-s", "-f", "Makefile", "--eval", "v:\n\t@echo $(VERSION)", "v"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert make.stdout.strip() == odpipe.__version__


def test_the_front_end_outside_a_checkout_is_one_line():
    code = ("import sys; sys.modules['launch'] = None; from odpipe.cli import main; "
            "sys.exit(main(['compile', '-o', 'x.yaml']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "odpipe compile: error: the pipeline front end (launch/, pipelines/, components/)" in out.stderr


def test_ruff_is_clean():
    """`make lint` runs the same check (plus hadolint); CI runs it here."""
    ruff = os.path.join(os.path.dirname(sys.executable), "ruff")
    out = subprocess.run([ruff, "check", "odpipe", "components", "pipelines", "launch", "tests"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:]
