"""`odpipe serve` in the CPU image (images/cpu.Dockerfile), the way Vertex AI and KServe run it:
real HTTP requests to the container; the detections equal in-process `odpipe predict`'s; bad
payloads are one-line 400s; `docker stop` (SIGTERM) drains and exits 0.

Marked `docker` (deselected by `make test`): needs a Docker daemon (`../shared/tools/container-env.sh`
here) and builds the image (layer cache: under a minute when only the code changed; minutes when the
requirements changed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest
from test_serve import MAX_INSTANCES, _bad_bodies, _free_port, predict_body, request

import odpipe

pytestmark = pytest.mark.docker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = f"odpipe-serve-test:{odpipe.__version__}"
HEALTH = "/v1/endpoints/7/deployedModels/8"
PREDICT = HEALTH + ":predict"


def docker(*args, timeout=120, check=True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=check)


@pytest.fixture(scope="module")
def image():
    if shutil.which("docker") is None or docker("info", check=False).returncode != 0:
        pytest.fail("no Docker daemon; start one with ../shared/tools/container-env.sh")
    built = subprocess.run(["docker", "build", "-f", "images/cpu.Dockerfile", "-t", IMAGE, "."], cwd=ROOT,
                           capture_output=True, text=True, timeout=3600)
    assert built.returncode == 0, built.stderr[-3000:]
    return IMAGE


@pytest.fixture(scope="module")
def container(image, export_dir):
    """The image serving the fixture export the way Vertex AI starts it: command `odpipe serve`,
    the model at AIP_STORAGE_URI, port and routes from AIP_* variables."""
    port = _free_port()
    name = f"odpipe-serve-test-{os.getpid()}"
    docker("run", "-d", "--name", name, "--entrypoint", "odpipe", "-p", f"127.0.0.1:{port}:8080",
           "-v", f"{export_dir}:/model:ro", "-e", "AIP_STORAGE_URI=/model", "-e", "AIP_HTTP_PORT=8080",
           "-e", f"AIP_HEALTH_ROUTE={HEALTH}", "-e", f"AIP_PREDICT_ROUTE={PREDICT}", image, "serve",
           "--max-instances", str(MAX_INSTANCES))
    try:
        deadline = time.monotonic() + 300
        while True:
            running = docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip()
            assert running == "true", docker("logs", name, check=False).stderr[-3000:]
            try:
                if request(port, "GET", HEALTH, timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the container was not ready in 300 s"
            time.sleep(1)
        yield name, port
    finally:
        docker("rm", "-f", name, check=False)


def test_container_detections_equal_odpipe_predict(container, detector, sample_dir, tmp_path):
    from odpipe.predict import predict

    _, port = container
    names = sorted(os.listdir(sample_dir / "images"))[:8]
    folder = tmp_path / "in"
    folder.mkdir()
    for name in names:
        shutil.copy(sample_dir / "images" / name, folder / name)
    predict(detector, [str(folder)], str(tmp_path / "out"), threshold=0.0, batch_size=4, draw=False, progress=False)
    expected = {os.path.basename(r["filename"]): {k: r[k] for k in ("width", "height", "detections")}
                for r in json.loads((tmp_path / "out" / "predictions.json").read_text())["predictions"]}
    got = {}
    for start in (0, 4):
        batch = names[start:start + 4]
        status, doc = request(port, "POST", PREDICT, predict_body([(folder / n).read_bytes() for n in batch],
                                                                  threshold=0.0))
        assert status == 200, doc
        got.update(zip(batch, doc["predictions"]))
    assert got == expected and sum(len(p["detections"]) for p in got.values()) > 0
    status, doc = request(port, "POST", "/v1/models/odpipe:predict", predict_body([(folder / names[0]).read_bytes()],
                                                                                   threshold=0.0))
    assert status == 200 and doc["predictions"][0] == expected[names[0]]


def test_container_bad_payloads_and_sigterm(container, sample_dir):
    name, port = container
    image = (sample_dir / "images" / sorted(os.listdir(sample_dir / "images"))[0]).read_bytes()
    for body, message in _bad_bodies(image, sample_dir).items():
        status, doc = request(port, "POST", PREDICT, body)
        assert status == 400 and message in doc["error"] and "\n" not in doc["error"], (body[:60], doc)
    docker("stop", "-t", "60", name, timeout=120)  # SIGTERM, as Vertex and Kubernetes stop a replica
    assert docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
    logs = docker("logs", name)
    assert "Finished server process" in logs.stderr + logs.stdout and "Traceback" not in logs.stderr
