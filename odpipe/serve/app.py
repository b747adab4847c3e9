"""The HTTP layer of `odpipe serve` (FastAPI): Vertex AI's custom-container contract and KServe V1.

    GET  /                          liveness: 200 {"status": "alive"} as soon as the server listens
    GET  HEALTH_ROUTE               readiness (Vertex; default /health): 200 once the model is loaded
                                    and warmed up, 503 before
    POST PREDICT_ROUTE              prediction (Vertex; default /predict)
    GET  /v1/models                 KServe V1: {"models": [NAME]}
    GET  /v1/models/NAME            KServe V1 readiness: 200 {"name", "ready": true}, 503 before
    POST /v1/models/NAME:predict    KServe V1 prediction

Every error answer is JSON {"error": "<one line>"}: 400 for a bad request (not JSON, not base64, not
an image, too many instances, a body over --max-bytes), 503 while loading, 404 for an unknown
route or model; never a traceback.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from odpipe.errors import first_line
from odpipe.serve.service import NotReady, PayloadError, Service

log = logging.getLogger("odpipe.serve")


class TooLarge(PayloadError):
    """A body over the size limit."""


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused (TooLarge) as soon as it is known to pass `max_bytes`: from
    Content-Length before reading anything, else while streaming a chunked body."""
    too_large = (f"the request body is over {max_bytes} bytes (the server's --max-bytes); send fewer or "
                 "smaller images per request")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise PayloadError(f"Content-Length {declared!r} is not a number")
        if int(declared) > max_bytes:
            raise TooLarge(too_large)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge(too_large)
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(service: Service, max_bytes: int, health_route: str = "/health",
               predict_route: str = "/predict") -> FastAPI:
    """The FastAPI app over `service` (whose `load()` the caller runs, before or after starting)."""
    app = FastAPI(title="odpipe serve", docs_url=None, redoc_url=None, openapi_url=None)
    name = service.name

    def not_ready() -> str:
        return service.error or f"model {name} is loading; ready when this route answers 200"

    async def predict(request: Request):
        try:
            body = await read_body(request, max_bytes)
            return await run_in_threadpool(service.predict, body)
        except PayloadError as err:
            return _error(400, str(err))
        except NotReady as err:
            return _error(503, str(err))
        except Exception as err:  # noqa: BLE001 - a server bug: one line for the client, the traceback in the log
            log.exception("odpipe serve: prediction failed")
            return _error(500, f"internal error ({type(err).__name__}: {first_line(err)})")

    async def health():
        if service.ready.is_set():
            return {"status": "ready", "model": name}
        return _error(503, not_ready())

    async def alive():
        return {"status": "alive"}

    async def kserve_models():
        return {"models": [name]}

    async def kserve_ready(model: str):
        if model != name:
            return _error(404, f"model {model} is not served here (serving: {name})")
        if service.ready.is_set():
            return {"name": name, "ready": True}
        return JSONResponse({"name": name, "ready": False, "error": not_ready()}, status_code=503)

    async def kserve_predict(model: str, request: Request):
        if model != name:
            return _error(404, f"model {model} is not served here (serving: {name})")
        return await predict(request)

    app.add_api_route("/", alive, methods=["GET"])
    app.add_api_route(health_route, health, methods=["GET"])
    app.add_api_route(predict_route, predict, methods=["POST"])
    app.add_api_route("/v1/models", kserve_models, methods=["GET"])
    app.add_api_route("/v1/models/{model}", kserve_ready, methods=["GET"])
    app.add_api_route("/v1/models/{model}:predict", kserve_predict, methods=["POST"])

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, exc):  # 404 / 405 as {"error": ...}
        return _error(exc.status_code, f"{exc.detail}; routes: GET {health_route}, POST {predict_route}, "
                                       f"GET /v1/models/{name}, POST /v1/models/{name}:predict")

    return app
