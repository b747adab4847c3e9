"""`odpipe serve`: an exported detector behind HTTP, for a Vertex AI endpoint or KServe.

    odpipe serve EXPORT_DIR [--port 8080] [--threshold 0.5] [--max-instances 32] [--max-bytes N]

    curl -s localhost:8080/predict -H 'Content-Type: application/json' \\
         -d "{\\"instances\\": [{\\"b64\\": \\"$(base64 -w0 photo.jpg)\\"}]}"

Vertex AI's custom-container contract: the port is AIP_HTTP_PORT (default 8080), readiness
AIP_HEALTH_ROUTE (default /health), prediction AIP_PREDICT_ROUTE (default /predict), and EXPORT
defaults to AIP_STORAGE_URI (where Vertex puts the model's artifact_uri: the export folder or its
saved_model/). KServe V1 is served beside it (odpipe.serve.app). The model loads in the background
while the server already answers liveness; readiness answers 200 only after the model is loaded and
has run one warm-up image. SIGTERM (what Vertex and Kubernetes send) stops accepting connections,
finishes the requests in flight (up to --graceful-timeout seconds) and exits 0.

Built on FastAPI + uvicorn; the model side (parsing, detector, post-processing) is
odpipe.serve.service, the same Detector and conversion as `odpipe predict`.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading

from odpipe import storage
from odpipe.errors import UserError, first_line

# Imported inside functions: uvicorn and the app only when the server starts (`odpipe serve -h` stays fast).

DEFAULT_PORT = 8080
DEFAULT_MAX_INSTANCES = 32
DEFAULT_MAX_BYTES = 32 * 1024 * 1024


def _env_port() -> int:
    value = os.environ.get("AIP_HTTP_PORT", str(DEFAULT_PORT))
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise UserError(f"AIP_HTTP_PORT={value!r}: not a port number; set it to e.g. 8080")
    return int(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("export", nargs="?", metavar="EXPORT",
                        help="export folder written by `odpipe export -o` (local or gs://), its saved_model/, or a "
                             "model.tflite; default: $AIP_STORAGE_URI (set by Vertex AI)")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=None, help=f"port (default $AIP_HTTP_PORT, else {DEFAULT_PORT})")
    parser.add_argument("--model-name", default="odpipe", help="model name in the KServe routes (default odpipe)")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="default minimum score (a request may pass parameters.threshold; default 0.5)")
    parser.add_argument("--max-instances", type=int, default=DEFAULT_MAX_INSTANCES,
                        help=f"most images per request, run as one batch (default {DEFAULT_MAX_INSTANCES})")
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                        help=f"largest request body in bytes (default {DEFAULT_MAX_BYTES}, 32 MiB)")
    parser.add_argument("--graceful-timeout", type=float, default=30.0,
                        help="seconds to finish requests in flight after SIGTERM (default 30)")


def _check(args: argparse.Namespace) -> str:
    """The export location after the argument checks (one-line UserErrors)."""
    export = args.export or os.environ.get("AIP_STORAGE_URI", "")
    if not export:
        raise UserError("no EXPORT given and AIP_STORAGE_URI is not set; pass the folder `odpipe export -o` wrote")
    if not storage.is_remote(export) and not os.path.exists(export):
        raise UserError(f"{export}: no such file or folder; pass the folder `odpipe export -o` wrote")
    if not 0.0 <= args.threshold <= 1.0:
        raise UserError(f"--threshold {args.threshold}: must be between 0 and 1")
    if args.max_instances < 1:
        raise UserError(f"--max-instances {args.max_instances}: must be at least 1")
    if args.max_bytes < 1024:
        raise UserError(f"--max-bytes {args.max_bytes}: must be at least 1024")
    return export


def _load_in_background(service, server) -> threading.Thread:
    """Load + warm up off the event loop; a model that cannot load stops the server with its error."""

    def load():
        try:
            service.load()
        except UserError as err:
            service.error = str(err)
            server.should_exit = True
        except Exception as err:  # noqa: BLE001 - reported as one line, then the server stops
            service.error = f"{export_name(service)}: cannot load the model ({type(err).__name__}: {first_line(err)})"
            server.should_exit = True

    thread = threading.Thread(target=load, name="odpipe-serve-load", daemon=True)
    thread.start()
    return thread


def export_name(service) -> str:
    return str(getattr(service.model, "export_dir", service.model))


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from odpipe.serve.app import create_app
    from odpipe.serve.service import Service

    export = _check(args)
    port = args.port if args.port is not None else _env_port()
    service = Service(export, name=args.model_name, threshold=args.threshold, max_instances=args.max_instances)
    app = create_app(service, args.max_bytes, health_route=os.environ.get("AIP_HEALTH_ROUTE") or "/health",
                     predict_route=os.environ.get("AIP_PREDICT_ROUTE") or "/predict")
    config = uvicorn.Config(app, host=args.host, port=port, log_level="info",
                            timeout_graceful_shutdown=args.graceful_timeout)
    server = uvicorn.Server(config)
    _load_in_background(service, server)
    # uvicorn handles SIGTERM (drains, then exits) and afterwards re-raises it to the handler it found:
    # this one, so a graceful stop ends with exit 0, not "killed by SIGTERM"; one that arrives before
    # uvicorn listens stops it at its first tick.
    previous = signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind (the reason is in its log line above)
        raise UserError(f"cannot listen on {args.host}:{port}; choose another --port or free that one") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        service.close()
    if service.error:
        raise UserError(service.error)
    return 0
