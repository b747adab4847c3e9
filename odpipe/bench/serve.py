"""Serving throughput and latency: `odpipe serve` over HTTP vs. `odpipe predict` in process.

    python -m odpipe.bench.serve [--model EXPORT_DIR] [--images 64] [--threshold 0.5]

One run on the same images (192-320 px JPEGs):
* served, batch 1 and batch 8: one client sends requests one after another on a keep-alive
  connection to the server (uvicorn + FastAPI in this process, on 127.0.0.1): images/s and the
  p50/p95 latency of a request (base64 + JSON + HTTP + the model + post-processing);
* in process, batch 1 and batch 8: the same Detector calls and conversion without HTTP;
* `odpipe predict` (folder read, batch 8, predictions.json, --no-draw) for reference.

Without --model it builds one first (bench.predict's: 2 training steps; an untrained model runs
exactly as fast as a trained one).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time

# Imported inside functions: TensorFlow and uvicorn only when the benchmark runs.


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def _figures(latencies: list[float], images: int) -> dict:
    return {"images_per_s": round(images / sum(latencies), 2), "p50_ms": round(1000 * _percentile(latencies, 50), 1),
            "p95_ms": round(1000 * _percentile(latencies, 95), 1)}


def _serve(service):
    """A running uvicorn over `service` on a free port: (server, thread, port). uvicorn binds the
    port itself (a socket handed to it over `sockets=` measured 40 ms more per request here)."""
    import uvicorn

    from odpipe.serve.app import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(service, 64 * 1024 * 1024), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, port


def _served(port: int, encoded: list[bytes], batch: int, threshold: float) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    latencies = []
    for i in range(0, len(encoded), batch):
        start = time.perf_counter()
        body = json.dumps({"instances": [{"b64": base64.b64encode(d).decode()} for d in encoded[i:i + batch]],
                           "parameters": {"threshold": threshold}})
        conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        doc = json.loads(response.read())
        assert response.status == 200, doc
        latencies.append(time.perf_counter() - start)
    conn.close()
    return latencies


def _in_process(detector, encoded: list[bytes], batch: int, threshold: float) -> list[float]:
    from odpipe.detector import image_info

    latencies = []
    for i in range(0, len(encoded), batch):
        start = time.perf_counter()
        chunk = encoded[i:i + batch]
        for data, raw in zip(chunk, detector.detect_bytes(chunk)):
            width, height, _ = image_info(data)
            [d.as_dict() for d in detector.to_detections(raw, width, height, threshold)]
        latencies.append(time.perf_counter() - start)
    return latencies


def _run(export_dir: str, folder: str, work: str, threshold: float) -> dict:
    import tensorflow as tf

    from odpipe.detector import Detector
    from odpipe.predict import predict
    from odpipe.serve.service import Service

    encoded = [open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))]
    detector = Detector(export_dir)
    service = Service(detector, threshold=threshold, max_instances=64)
    service.load()
    for size in (1, 8):  # warm both batch shapes
        detector.detect_bytes(encoded[:size])
    server, thread, port = _serve(service)
    try:
        figures = {"device": "GPU" if tf.config.list_physical_devices("GPU") else f"CPU ({os.cpu_count()} cores)",
                   "images": len(encoded)}
        for batch in (1, 8):
            figures[f"served_batch{batch}"] = _figures(_served(port, encoded, batch, threshold), len(encoded))
            figures[f"in_process_batch{batch}"] = _figures(_in_process(detector, encoded, batch, threshold),
                                                           len(encoded))
        start = time.perf_counter()
        predict(detector, [folder], os.path.join(work, "out"), threshold=threshold, batch_size=8, draw=False,
                progress=False)
        figures["odpipe_predict_batch8_images_per_s"] = round(len(encoded) / (time.perf_counter() - start), 2)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        detector.close()
    for batch in (1, 8):
        figures[f"served_vs_in_process_batch{batch}"] = round(
            figures[f"served_batch{batch}"]["images_per_s"] / figures[f"in_process_batch{batch}"]["images_per_s"], 3)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m odpipe.bench.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="export folder (default: build a small one first)")
    parser.add_argument("--images", type=int, default=64, help="images (default 64)")
    parser.add_argument("--threshold", type=float, default=0.5, help="score threshold (default 0.5)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from odpipe.bench.predict import _build_model
    from odpipe.sample_data import write_sample_data

    work = tempfile.mkdtemp(prefix="odpipe-bench-serve-")
    try:
        export_dir = args.model or _build_model(work)
        write_sample_data(os.path.join(work, "inputs"), images=args.images, seed=7)
        figures = _run(export_dir, os.path.join(work, "inputs", "images"), work, args.threshold)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"serve benchmark on {figures['device']}, {figures['images']} images (192-320 px JPEG), one run:")
    for batch in (1, 8):
        for kind in ("served", "in_process"):
            f = figures[f"{kind}_batch{batch}"]
            print(f"  {kind:10s} batch {batch}: {f['images_per_s']:8.2f} images/s  p50 {f['p50_ms']:7.1f} ms  "
                  f"p95 {f['p95_ms']:7.1f} ms per request")
        print(f"  served / in process, batch {batch}: {figures[f'served_vs_in_process_batch{batch}']:.3f}")
    print(f"  odpipe predict (folder, batch 8, --no-draw): {figures['odpipe_predict_batch8_images_per_s']:.2f} images/s")
    print(json.dumps(figures))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
