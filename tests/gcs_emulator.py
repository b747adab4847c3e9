"""gcp-storage-emulator, plus the one Cloud Storage precondition odpipe relies on.

The emulator (checked on gcp-storage-emulator 2026.7.19) ignores `ifGenerationMatch`: an upload
with `if_generation_match=0` replaces an existing object instead of failing with 412, as Cloud
Storage does. `tests/test_model_home.py::test_the_stock_emulator_ignores_if_generation_match`
shows it. So the fixture starts the emulator through this script, which makes uploads honour
`ifGenerationMatch=0` (412 when the object exists), and the exclusive create of odpipe.storage is
tested against that. The emulator serves one request at a time, so the check and the write are
not interleaved with another upload.

    python tests/gcs_emulator.py start --host ... --port ... [emulator arguments]
"""

from __future__ import annotations

import sys
from http import HTTPStatus

from gcp_storage_emulator.__main__ import main
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

PRECONDITION_FAILED = {"error": {"code": 412, "message": "At least one of the pre-conditions you specified did not hold.",
                                 "errors": [{"domain": "global", "reason": "conditionNotMet"}]}}


def _object_name(request) -> str | None:
    if "name" in request.query:
        return request.query["name"][0]
    data = request.data
    if isinstance(data, dict):
        return (data.get("meta") or {}).get("name") or data.get("name")
    return None


def _honour_if_generation_match(upload):
    def wrapper(request, response, storage):
        wanted = request.query.get("ifGenerationMatch")
        if wanted and wanted[0] == "0" and "upload_id" not in request.query:
            try:
                storage.get_file_obj(request.params["bucket_name"], _object_name(request))
            except NotFound:
                pass
            else:
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json(PRECONDITION_FAILED)
                return None
        return upload(request, response, storage)

    return wrapper


def install() -> None:
    for name in ("_media_upload", "_multipart_upload", "_create_resumable_upload"):
        setattr(objects, name, _honour_if_generation_match(getattr(objects, name)))


if __name__ == "__main__":
    install()
    sys.exit(main(sys.argv[1:]))
