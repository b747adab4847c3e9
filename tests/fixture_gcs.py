"""GCS emulator fixtures.

`gcs_bucket` starts `gcp-storage-emulator` (in memory; through tests/gcs_emulator.py, which makes
it honour the `if_generation_match=0` precondition as Cloud Storage does) in a subprocess on a free loopback port,
points `STORAGE_EMULATOR_HOST` at it for this process and every process it starts, creates a
bucket and yields `gs://BUCKET`. Beam's GCS file system and the google-cloud-storage client
honour the variable; TensorFlow's `gs://` does not, so tests read bucket data through
`odpipe.storage`.

An emulator needs no credentials, but Beam's GCS file system looks for Google application-default
credentials first and retries for ~20 s per process when there are none. For the session the
fixture makes Beam's client factory (`apache_beam.io.gcp.gcsio.create_storage_client`, a public
name) build anonymous clients, in this process: tests that use the bucket run Beam in memory
(`--direct_running_mode=in_memory`); a worker process would still find the emulator, after
that wait. This is a test-only tweak; production code never touches Beam's credentials.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

BUCKET = "odpipe-test"
EMULATOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gcs_emulator.py")  # + ifGenerationMatch=0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gcp-storage-emulator exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"gcp-storage-emulator did not answer on {url} within {timeout:.0f}s")


def upload_dir(local_dir: str, gs_prefix: str) -> list[str]:
    """Copy every file under `local_dir` to `gs_prefix/<relative path>`; returns the URIs."""
    from odpipe import storage

    uris = []
    for root, _dirs, files in os.walk(local_dir):
        for name in sorted(files):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, local_dir).replace(os.sep, "/")
            uri = f"{gs_prefix.rstrip('/')}/{rel}"
            with open(path, "rb") as f:
                storage.write_bytes(uri, f.read())
            uris.append(uri)
    return uris


def _anonymous_beam_clients(patch: pytest.MonkeyPatch) -> None:
    """Let Beam's GCS file system talk to the emulator without looking for credentials."""
    from apache_beam.io.gcp import gcsio

    original = gcsio.create_storage_client

    def anonymous(pipeline_options, use_credentials=True):
        return original(pipeline_options, use_credentials=False)

    patch.setattr(gcsio, "create_storage_client", anonymous)


@pytest.fixture(scope="session")
def gcs_emulator():
    """The emulator's `host:port`; STORAGE_EMULATOR_HOST is set while the session runs."""
    port = _free_port()
    host = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, EMULATOR, "start", "--host", "127.0.0.1", "--port", str(port),
         "--in-memory", "--default-bucket", BUCKET],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    old = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT")}
    try:
        _wait_until_up(f"{host}/storage/v1/b", proc)
        os.environ["STORAGE_EMULATOR_HOST"] = host
        os.environ.setdefault("GOOGLE_CLOUD_PROJECT", "odpipe-test")
        with pytest.MonkeyPatch.context() as patch:
            _anonymous_beam_clients(patch)
            yield host
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def gcs_bucket(gcs_emulator) -> str:
    """`gs://odpipe-test`, an empty bucket on the emulator (tests write under their own prefixes)."""
    return f"gs://{BUCKET}"
