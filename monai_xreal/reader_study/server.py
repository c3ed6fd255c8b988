# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The reader study's web page and JSON API, on Python's own threading HTTP server (loopback by default).

Routes: ``GET /`` the page; ``GET /api/next?reader=K`` the reader's next image token and progress;
``GET /image/<token>.png`` the image, re-encoded as a plain 8-bit PNG (no file name, format or metadata reaches
the reader); ``POST /api/answer`` ``{"reader", "token", "answer": "real"|"fake"|"unsure", "confidence": 1-5|null}``;
``GET /api/report`` the statistics so far.
"""

from __future__ import annotations

import io
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlparse

import numpy as np
from PIL import Image

from monai_xreal.errors import XRealInputError
from monai_xreal.io import load_cxr
from monai_xreal.reader_study.stats import reader_report
from monai_xreal.reader_study.store import StudyStore

__all__ = ["ReaderStudyServer", "render_png"]

MAX_BODY = 4096


def render_png(path) -> bytes:
    """A CXR file (DICOM, PNG, NIfTI...) as 8-bit greyscale PNG bytes, bone bright, rows along the image's y."""
    image = load_cxr(path)[0].numpy()
    buffer = io.BytesIO()
    Image.fromarray(np.round(image.T * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


class ReaderStudyServer(ThreadingHTTPServer):
    """Serves one :class:`StudyStore` to readers' browsers.

    Args:
        store: the study.
        address: ``(host, port)``; port 0 picks a free one (see ``server_address`` after start).
    """

    daemon_threads = True

    def __init__(self, store: StudyStore, address: tuple[str, int]) -> None:
        self.store = store
        self.page = resources.files("monai_xreal.reader_study").joinpath("page.html").read_text(encoding="utf-8")
        self._images: dict[str, bytes] = {}
        self._images_lock = threading.Lock()
        super().__init__(address, _Handler)

    def image(self, token: str) -> bytes | None:
        with self._images_lock:
            if token in self._images:
                return self._images[token]
        path = self.store.image_path(token)
        if path is None:
            return None
        data = render_png(path)
        with self._images_lock:
            self._images[token] = data
        return data


class _Handler(BaseHTTPRequestHandler):
    server: ReaderStudyServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass  # one line per image request would drown the console; answers are in the database

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/":
            page = self.server.page.replace("__READERS__", str(self.server.store.readers))
            return self._send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")
        if url.path == "/api/next":
            reader = parse_qs(url.query).get("reader", [""])[0]
            return self._json(lambda: self.server.store.next_image(_reader(reader)))
        if url.path == "/api/report":
            store = self.server.store
            return self._json(lambda: reader_report(store.answers(), store.readers, len(store.order(1))))
        if url.path.startswith("/image/") and url.path.endswith(".png"):
            data = self.server.image(url.path[len("/image/") : -len(".png")])
            if data is None:
                return self._error(HTTPStatus.NOT_FOUND, "unknown image")
            return self._send(HTTPStatus.OK, data, "image/png", cache=True)
        return self._error(HTTPStatus.NOT_FOUND, f"no such page: {url.path}")

    def do_POST(self) -> None:
        if urlparse(self.path).path != "/api/answer":
            return self._error(HTTPStatus.NOT_FOUND, "no such endpoint")
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            return self._error(HTTPStatus.BAD_REQUEST, f"an answer is a JSON body of at most {MAX_BODY} bytes")
        try:
            body = json.loads(self.rfile.read(length))
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            return self._error(HTTPStatus.BAD_REQUEST, "the body is not a JSON object")
        store = self.server.store
        return self._json(lambda: {"saved": store.answer(_reader(body.get("reader")), str(body.get("token")),
                                                         body.get("answer"), body.get("confidence"))})  # fmt: skip

    def _json(self, make) -> None:
        try:
            payload = make()
        except XRealInputError as err:
            status = HTTPStatus.NOT_FOUND if err.argument == "token" else HTTPStatus.BAD_REQUEST
            return self._error(status, str(err))
        self._send(HTTPStatus.OK, json.dumps(payload).encode(), "application/json")

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._send(status, json.dumps({"error": message}).encode(), "application/json")

    def _send(self, status: HTTPStatus, data: bytes, content_type: str, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "private, max-age=3600" if cache else "no-store")
        self.end_headers()
        self.wfile.write(data)


def _reader(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise XRealInputError("reader", f"must be a reader number, got {value!r}") from None
