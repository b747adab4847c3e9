"""odpipe serve: real HTTP requests to a running server on a free 127.0.0.1 port.

In process (uvicorn in a thread, the session's real exported detector): readiness before and after
load + warm-up, Vertex and KServe routes, the detections equal `odpipe predict`'s, every bad
payload is a 400 with one line. As a subprocess (`python -m odpipe serve`): SIGTERM finishes the
request in flight and exits 0; a model that cannot load, a missing EXPORT: one line, exit 2.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from odpipe.serve.service import PayloadError, parse_request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_BYTES = 400_000
MAX_INSTANCES = 8


def request(port: int, method: str, path: str, body=None, headers=None, timeout=120, chunked=False):
    """(status, parsed JSON body) of one real HTTP request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})},
                     encode_chunked=chunked)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def predict_body(images: list[bytes], **parameters) -> bytes:
    doc = {"instances": [{"b64": base64.b64encode(data).decode()} for data in images]}
    if parameters:
        doc["parameters"] = parameters
    return json.dumps(doc).encode()


class InProcessServer:
    """uvicorn serving `app` in a thread on a free 127.0.0.1 port (bound before it starts)."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start in 30 s"
            time.sleep(0.05)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture(scope="module")
def images(sample_dir):
    names = sorted(os.listdir(sample_dir / "images"))[:8]
    return [(name, (sample_dir / "images" / name).read_bytes()) for name in names]


VERTEX_HEALTH = "/v1/endpoints/1/deployedModels/2"
VERTEX_PREDICT = "/v1/endpoints/1/deployedModels/2:predict"


def start_server(detector):
    """(server, service) over the session's detector, started BEFORE the model is loaded."""
    from odpipe.serve.app import create_app
    from odpipe.serve.service import Service

    service = Service(detector, name="shapes", threshold=0.5, max_instances=MAX_INSTANCES)
    app = create_app(service, MAX_BYTES, health_route=VERTEX_HEALTH, predict_route=VERTEX_PREDICT)
    return InProcessServer(app), service


@pytest.fixture(scope="module")
def served(detector):
    """(server, service), loaded and warmed up."""
    server, service = start_server(detector)
    service.load()
    yield server, service
    server.stop()




def test_ready_only_after_load_and_warmup(detector, images):
    server, service = start_server(detector)
    try:
        _check_readiness(server, service, images)
    finally:
        server.stop()


def _check_readiness(server, service, images):
    assert request(server.port, "GET", "/") == (200, {"status": "alive"})
    status, doc = request(server.port, "GET", VERTEX_HEALTH)
    assert status == 503 and "loading" in doc["error"]
    status, doc = request(server.port, "GET", "/v1/models/shapes")
    assert status == 503 and doc["ready"] is False
    status, doc = request(server.port, "POST", VERTEX_PREDICT, predict_body([images[0][1]]))
    assert status == 503 and "loading" in doc["error"]
    service.load()  # what `odpipe serve` runs in its background thread
    assert request(server.port, "GET", VERTEX_HEALTH) == (200, {"status": "ready", "model": "shapes"})
    assert request(server.port, "GET", "/v1/models/shapes") == (200, {"name": "shapes", "ready": True})
    assert request(server.port, "GET", "/v1/models") == (200, {"models": ["shapes"]})


def test_http_detections_equal_odpipe_predict(served, images, detector, sample_dir, tmp_path):
    """Same images, same batches (4): the Vertex and the KServe route answer exactly the records of
    predictions.json; `key` is echoed; the threshold parameter filters like --threshold."""
    from odpipe.predict import predict

    server, service = served
    folder = tmp_path / "in"
    folder.mkdir()
    for name, data in images:
        (folder / name).write_bytes(data)
    predict(detector, [str(folder)], str(tmp_path / "out"), threshold=0.0, batch_size=4, draw=False, progress=False)
    expected = {os.path.basename(r["filename"]): {k: r[k] for k in ("width", "height", "detections")}
                for r in json.loads((tmp_path / "out" / "predictions.json").read_text())["predictions"]}
    assert sum(len(r["detections"]) for r in expected.values()) > 0  # a comparison of real boxes
    got = {}
    for route in (VERTEX_PREDICT, "/v1/models/shapes:predict"):
        for start in (0, 4):
            batch = images[start:start + 4]
            status, doc = request(server.port, "POST", route, predict_body([d for _, d in batch], threshold=0.0))
            assert status == 200, doc
            got.update({name: p for (name, _), p in zip(batch, doc["predictions"])})
        assert got == expected
    body = json.dumps({"instances": [{"image_bytes": {"b64": base64.b64encode(images[0][1]).decode()}, "key": "k1"}],
                       "parameters": {"threshold": 0.2}}).encode()
    status, doc = request(server.port, "POST", VERTEX_PREDICT, body)
    first = expected[images[0][0]]
    assert status == 200 and doc["predictions"][0]["key"] == "k1"
    assert doc["predictions"][0]["detections"] == [d for d in first["detections"] if d["score"] >= 0.2]
    status, doc = request(server.port, "POST", VERTEX_PREDICT, predict_body([images[0][1]]))  # server default 0.5
    assert doc["predictions"][0]["detections"] == [d for d in first["detections"] if d["score"] >= 0.5]


def _bad_bodies(image: bytes, sample_dir) -> dict:
    b64 = base64.b64encode(image).decode()
    # a JPEG header over bytes no decoder can read (a truncated JPEG is repaired, as odpipe predict does)
    corrupt = base64.b64encode(image[:20] + bytes(range(256)) * 8).decode()
    return {
        b"not json {": "not JSON",
        b"\xff\xfe\x00garbage": "not JSON",
        b"[1, 2]": 'no "instances"',
        b'{"images": []}': 'no "instances"',
        b'{"instances": []}': "non-empty list",
        b'{"instances": {"b64": "x"}}': "non-empty list",
        predict_body([image] * (MAX_INSTANCES + 1)): f"at most {MAX_INSTANCES} per request",
        b'{"instances": ["abc"]}': "instances[0]: expected an object",
        json.dumps({"instances": [{"b64": b64, "bytes": 1}]}).encode(): "instances[0]: unknown field(s) bytes",
        json.dumps({"instances": [{"b64": b64}, {"key": "x"}]}).encode(): 'instances[1]: needs "b64"',
        json.dumps({"instances": [{"b64": b64}, {"b64": "%%%not base64"}]}).encode(): "instances[1].b64: not valid base64",
        b'{"instances": [{"b64": ""}]}': "instances[0].b64: empty",
        predict_body([image, b"hello, not an image"]): "instances[1]: not an image",
        json.dumps({"instances": [{"b64": corrupt}]}).encode(): "instances[0]:",
        predict_body([image], threshold=1.5): "parameters.threshold: 1.5 is not a number between 0 and 1",
        predict_body([image], threshold="high"): "parameters.threshold",
        predict_body([image], top_k=3): "parameters: unknown field(s) top_k",
        json.dumps({"instances": [{"b64": b64}], "parameters": 0.3}).encode(): "parameters: expected an object",
        json.dumps({"instances": [{"b64": b64}], "signature": "x"}).encode(): "unknown field(s) signature",
    }


@pytest.mark.parametrize("route", [VERTEX_PREDICT, "/v1/models/shapes:predict"])
def test_bad_payloads_are_one_line_400s(served, images, sample_dir, route):
    server, service = served
    for body, message in _bad_bodies(images[0][1], sample_dir).items():
        status, doc = request(server.port, "POST", route, body)
        assert (status, list(doc)) == (400, ["error"]), (body[:60], doc)
        assert message in doc["error"] and "\n" not in doc["error"] and "Traceback" not in doc["error"], doc
    # the server is still healthy after all of them
    assert request(server.port, "GET", VERTEX_HEALTH)[0] == 200


def test_request_size_limit(served, images):
    """Over --max-bytes: refused from Content-Length before the body is read, or while streaming a
    chunked body; either way a 400 naming the limit."""
    server, service = served
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.putrequest("POST", VERTEX_PREDICT)
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(MAX_BYTES + 1))
    conn.endheaders()  # the body is never sent: the answer comes from the header alone
    response = conn.getresponse()
    doc = json.loads(response.read())
    conn.close()
    assert response.status == 400 and f"over {MAX_BYTES} bytes" in doc["error"]

    big = predict_body([images[0][1]]) + b" " * MAX_BYTES  # valid JSON, only too large
    chunks = (big[i:i + 65536] for i in range(0, len(big), 65536))
    status, doc = request(server.port, "POST", VERTEX_PREDICT, chunks, headers={"Transfer-Encoding": "chunked"},
                          chunked=True)
    assert status == 400 and f"over {MAX_BYTES} bytes" in doc["error"]
    small = predict_body([images[0][1]])  # the same, chunked, under the limit: answered
    status, doc = request(server.port, "POST", VERTEX_PREDICT, iter([small[:100], small[100:]]),
                          headers={"Transfer-Encoding": "chunked"}, chunked=True)
    assert status == 200 and len(doc["predictions"]) == 1


def test_unknown_routes_and_models(served):
    server, _ = served
    status, doc = request(server.port, "GET", "/v1/models/other")
    assert status == 404 and "not served here" in doc["error"]
    status, doc = request(server.port, "POST", "/v1/models/other:predict", b"{}")
    assert status == 404 and "not served here" in doc["error"]
    status, doc = request(server.port, "GET", "/nothing")
    assert status == 404 and "routes:" in doc["error"]
    assert request(server.port, "GET", VERTEX_PREDICT)[0] == 405


def test_parse_request_unit():
    images, keys, threshold = parse_request(b'{"instances": [{"b64": "aGk=", "key": 7}]}', 4, 0.5)
    assert (images, keys, threshold) == ([b"hi"], [7], 0.5)
    with pytest.raises(PayloadError, match="at most 1 per request"):
        parse_request(b'{"instances": [{"b64": "aGk="}, {"b64": "aGk="}]}', 1, 0.5)
    with pytest.raises(PayloadError, match="between 0 and 1"):
        parse_request(b'{"instances": [{"b64": "aGk="}], "parameters": {"threshold": true}}', 1, 0.5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(port: int, proc, log_path, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, open(log_path).read()
        try:
            if request(port, "GET", "/health", timeout=5)[0] == 200:
                return
        except OSError:
            pass  # not listening yet
        time.sleep(0.5)
    raise AssertionError(f"not ready in {seconds} s: {open(log_path).read()}")


def test_sigterm_finishes_the_request_in_flight_and_exits_0(export_dir, images, tmp_path):
    port = _free_port()
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "PYTHONPATH": ROOT, "AIP_HTTP_PORT": str(port), "AIP_STORAGE_URI": str(export_dir)}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "odpipe", "serve", "--host", "127.0.0.1"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_ready(port, proc, log_path)
        body = predict_body([images[0][1]], threshold=0.0)
        head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(head + body[:20])  # the request is in flight: headers and part of its body
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            with pytest.raises(OSError):  # no new connections once shutting down
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            sock.sendall(body[20:])
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["predictions"][0]["width"] > 0
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = log_path.read_text()
    assert "model odpipe ready" in log and "Finished server process" in log and "Traceback" not in log


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    from odpipe.cli import main

    monkeypatch.delenv("AIP_STORAGE_URI", raising=False)
    assert main(["serve"]) == 2
    assert capsys.readouterr().err.strip() == (
        "odpipe serve: error: no EXPORT given and AIP_STORAGE_URI is not set; pass the folder `odpipe export -o` wrote")
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "missing: no such file or folder" in capsys.readouterr().err
    monkeypatch.setenv("AIP_HTTP_PORT", "http")
    assert main(["serve", str(tmp_path)]) == 2
    assert "AIP_HTTP_PORT='http': not a port number" in capsys.readouterr().err
    # a folder that is not an export: the server starts, the model cannot load, it stops with that error
    monkeypatch.setenv("AIP_HTTP_PORT", str(_free_port()))
    assert main(["serve", str(tmp_path), "--host", "127.0.0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("odpipe serve: error: ") and "no saved_model/ folder" in err


def test_registry_serves_with_odpipe_serve_unless_a_prebuilt_image():
    from odpipe import registry

    assert registry.serving_container(registry.SERVING_IMAGE) == {"serving_container_image_uri": registry.SERVING_IMAGE}
    ours = registry.serving_container("reg.example/odpipe:5")
    assert ours["serving_container_command"] == ["odpipe", "serve"] and ours["serving_container_ports"] == [8080]
    assert (ours["serving_container_health_route"], ours["serving_container_predict_route"]) == ("/health", "/predict")


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(detector, images):
    """A small file can hold a huge image (a decompression bomb): its header is checked first."""
    from odpipe.serve.service import Service

    service = Service(detector, max_pixels=100 * 100)
    service.load()
    with pytest.raises(PayloadError, match=r"instances\[0\]: \d+x\d+ pixels is over the server's limit of 10000"):
        service.predict(predict_body([images[0][1]]))


def test_service_loads_from_aip_storage_uri_on_gcs(export_dir, detector, images, gcs_bucket):
    """Vertex copies the registry version's artifact_uri (export/saved_model) to a gs:// AIP_STORAGE_URI."""
    from fixture_gcs import upload_dir

    from odpipe.serve.service import Service

    upload_dir(str(export_dir / "saved_model"), f"{gcs_bucket}/aip/saved_model")
    service = Service(f"{gcs_bucket}/aip/saved_model", threshold=0.0)
    service.load()
    try:
        doc = service.predict(predict_body([images[0][1]]))
    finally:
        service.close()
    from odpipe.detector import image_info

    width, height, _ = image_info(images[0][1])
    raw = detector.detect_bytes([images[0][1]])[0]
    assert doc["predictions"][0]["detections"] == [d.as_dict() for d in detector.to_detections(raw, width, height)]
