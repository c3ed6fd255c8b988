# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""MONAI Label's web app with the request checks its infer endpoint does before the app is asked.

``monailabel start_server ... --uvicorn_app monai_xreal.label.asgi:app`` (what ``monai-xreal serve`` runs) serves
MONAI Label's own FastAPI app with three additions, so that every bad request gets a 4xx with a one-line reason:

- a request body larger than the uploads allowed (``--conf max_upload_mb``, twice for anatomy + pathology) is
  refused with 413 before it is read;
- a ``params`` form field that is not JSON: 400 (MONAI Label answers 500);
- an infer request with neither a file nor an image id: 400 (MONAI Label answers 500).

Everything else (unknown model, bad masks and parameters, limits) is answered by :class:`XRealLabelApp` and works
under MONAI Label's default app too.
"""

from __future__ import annotations

import json

from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from monailabel.app import app
from monailabel.config import settings
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import BaseHTTPMiddleware

from monai_xreal.errors import XRealInputError
from monai_xreal.label.params import GenerateLimits

__all__ = ["app"]

_NO_INPUT = "Neither Image nor File"  # MONAI Label 0.8's detail for an infer request without input


def _max_body_bytes() -> int:
    try:
        limits = GenerateLimits.from_conf(settings.MONAI_LABEL_APP_CONF or {})
    except XRealInputError:
        limits = GenerateLimits()  # the app reports the bad --conf value at start
    return 2 * limits.max_upload_bytes + 2**20  # two files and the form around them


class _BodyLimit(BaseHTTPMiddleware):
    def __init__(self, asgi_app, max_bytes: int) -> None:
        super().__init__(asgi_app)
        self.max_bytes = max_bytes

    async def dispatch(self, request: Request, call_next):
        length = request.headers.get("content-length", "")
        if request.method == "POST" and length.isdigit() and int(length) > self.max_bytes:
            detail = (
                f"request body of {int(length) / 2**20:.1f} MiB; this server takes up to {self.max_bytes / 2**20:g} MiB"
            )
            return JSONResponse({"detail": detail}, status_code=413)
        return await call_next(request)


async def _bad_params(request: Request, exc: json.JSONDecodeError) -> JSONResponse:
    return JSONResponse({"detail": f"params: not valid JSON ({exc.msg} at character {exc.pos})"}, status_code=400)


async def _http_error(request: Request, exc: StarletteHTTPException):
    if exc.status_code == 500 and _NO_INPUT in str(exc.detail):
        detail = "no input: send the image as the 'file' form field or name a datastore image with ?image="
        return JSONResponse({"detail": detail}, status_code=400)
    return await http_exception_handler(request, exc)


app.add_middleware(_BodyLimit, max_bytes=_max_body_bytes())
app.add_exception_handler(json.JSONDecodeError, _bad_params)
app.add_exception_handler(StarletteHTTPException, _http_error)
