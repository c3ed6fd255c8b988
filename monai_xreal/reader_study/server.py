# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The reader study's web page and JSON API, on Python's own threading HTTP server (plain HTTP, loopback by default:
put a TLS reverse proxy in front of it to serve a department, see docs/reader_study.md).

Every route needs a key, given as ``?key=K`` or as the header ``Authorization: Bearer K``; a missing or unknown key,
or a key of the wrong kind, is answered 403 with a small JSON error.

A reader's key (their link is ``/?key=K``): ``GET /`` the page; ``GET /api/next`` the reader's next image token and
progress; ``GET /image/<token>.png`` one of this reader's images, re-encoded as a plain 8-bit PNG (no file name,
format or metadata reaches the reader); ``POST /api/answer`` ``{"token", "answer": "real"|"fake"|"unsure",
"confidence": 1-5|null}``, stored as the key's reader's (a reader number in the body is ignored).

The owner's key: ``GET /api/report`` the statistics so far, naming the study id; ``GET /api/answers.csv`` every
answer; ``GET /api/study.json`` the frozen study definition.
"""

from __future__ import annotations

import io
import json
import sys
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlparse

import numpy as np
from PIL import Image

from monai_xreal.errors import XRealInputError
from monai_xreal.io import load_cxr
from monai_xreal.io.hashing import sha256_file
from monai_xreal.reader_study.stats import answers_csv, reader_report
from monai_xreal.reader_study.store import StudyStore

__all__ = ["ReaderStudyServer", "render_png", "study_links"]

MAX_BODY = 4096
_HEADERS = {  # every response: never cached, never framed, never sniffed, never sent on as a referrer
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
_PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src blob:; "
                "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")  # fmt: skip


DISPLAY_SIZE = 1024  # every image is shown at this size: neither its size nor its aspect may tell real from fake


def render_png(path, size: int = DISPLAY_SIZE) -> bytes:
    """A CXR file (DICOM, PNG, NIfTI...) as ``size`` x ``size`` 8-bit greyscale PNG bytes, bone bright, rows along the
    image's y (area-averaged down, or bilinear up, to the one display size)."""
    import torch.nn.functional as F

    image = load_cxr(path)[None]
    mode = "area" if min(image.shape[2:]) >= size else "bilinear"
    image = F.interpolate(image.as_tensor(), size=(size, size), mode=mode)[0, 0].clamp(0, 1).numpy()
    buffer = io.BytesIO()
    Image.fromarray(np.round(image.T * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def study_links(store: StudyStore, base_url: str) -> dict:
    """``{"readers": {reader: link}, "report": link, "answers": link}`` of a set-up study served at ``base_url``."""
    base = base_url.rstrip("/")
    owner = store.owner_key()
    return {
        "readers": {reader: f"{base}/?key={key}" for reader, key in store.reader_keys().items()},
        "report": f"{base}/api/report?key={owner}",
        "answers": f"{base}/api/answers.csv?key={owner}",
    }


class ReaderStudyServer(ThreadingHTTPServer):
    """Serves one set-up :class:`StudyStore` (see :meth:`StudyStore.setup`) to readers' browsers.

    Args:
        store: the study.
        address: ``(host, port)``; port 0 picks a free one (see ``server_address`` after start).
    """

    daemon_threads = True

    def __init__(self, store: StudyStore, address: tuple[str, int]) -> None:
        self.store = store
        store.reader_keys()  # the secrets are there (or this raises before listening)
        self.page = resources.files("monai_xreal.reader_study").joinpath("page.html").read_text(encoding="utf-8")
        self._images: dict[int, bytes] = {}
        self._images_lock = threading.Lock()
        super().__init__(address, _Handler)

    def image(self, reader: int, token: str) -> bytes | None:
        """Reader ``reader``'s image ``token`` as PNG bytes; ``None`` if the token is not this reader's. Refuses
        (``XRealInputError``) an image whose bytes are no longer those the study froze."""
        image = self.store.image_for(reader, token)
        if image is None:
            return None
        with self._images_lock:
            if image["id"] in self._images:
                return self._images[image["id"]]
        if sha256_file(image["path"]) != image["sha256"]:
            raise XRealInputError("study", "this image changed since the study was frozen; tell the study's owner")
        data = render_png(image["path"])
        with self._images_lock:
            self._images[image["id"]] = data
        return data


class _Handler(BaseHTTPRequestHandler):
    server: ReaderStudyServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass  # request lines carry keys; answers are in the database

    def do_GET(self) -> None:
        self._guarded(self._get)

    def do_POST(self) -> None:
        self._guarded(self._post)

    def _guarded(self, handle) -> None:
        try:
            handle()
        except Exception:  # the reader gets a one-line error, the console the trace
            traceback.print_exc(file=sys.stderr)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")

    def _get(self) -> None:
        url = urlparse(self.path)
        store = self.server.store
        if url.path in ("/api/report", "/api/answers.csv", "/api/study.json"):
            if not store.is_owner(self._key(url)):
                return self._error(HTTPStatus.FORBIDDEN, "the owner's key is needed")
            if url.path == "/api/report":
                report = reader_report(store.answers(), store.readers, store.image_count, study=store.study_id)
                return self._send(HTTPStatus.OK, json.dumps(report).encode(), "application/json")
            if url.path == "/api/answers.csv":
                return self._send(HTTPStatus.OK, answers_csv(store.answers(), store.study_id).encode(), "text/csv")
            return self._send(HTTPStatus.OK, store.definition_path.read_bytes(), "application/json")
        if url.path not in ("/", "/api/next") and not (url.path.startswith("/image/") and url.path.endswith(".png")):
            return self._error(HTTPStatus.NOT_FOUND, "no such page")
        reader = store.reader_for(self._key(url))
        if reader is None:
            return self._error(HTTPStatus.FORBIDDEN, "this study is by invitation: open the link you were given")
        if url.path == "/":
            page = self.server.page.replace("__READER__", str(reader))
            return self._send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8", policy=_PAGE_POLICY)
        if url.path == "/api/next":
            return self._json(lambda: store.next_image(reader))
        try:
            data = self.server.image(reader, url.path[len("/image/") : -len(".png")])
        except XRealInputError as err:
            return self._error(HTTPStatus.CONFLICT, err.message)
        if data is None:
            return self._error(HTTPStatus.FORBIDDEN, "not an image of this reader")
        return self._send(HTTPStatus.OK, data, "image/png")

    def _post(self) -> None:
        url = urlparse(self.path)
        if url.path != "/api/answer":
            return self._error(HTTPStatus.NOT_FOUND, "no such endpoint")
        store = self.server.store
        reader = store.reader_for(self._key(url))
        if reader is None:
            return self._error(HTTPStatus.FORBIDDEN, "this study is by invitation: open the link you were given")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if not 0 < length <= MAX_BODY:
            return self._error(HTTPStatus.BAD_REQUEST, f"an answer is a JSON body of at most {MAX_BODY} bytes")
        try:
            body = json.loads(self.rfile.read(length))
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            return self._error(HTTPStatus.BAD_REQUEST, "the body is not a JSON object")
        return self._json(lambda: {"saved": store.answer(reader, str(body.get("token")), body.get("answer"),
                                                         body.get("confidence"))})  # fmt: skip

    def _key(self, url) -> str | None:
        scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return parse_qs(url.query).get("key", [None])[0]

    def _json(self, make) -> None:
        try:
            payload = make()
        except XRealInputError as err:
            status = HTTPStatus.FORBIDDEN if err.argument == "image" else HTTPStatus.BAD_REQUEST
            return self._error(status, str(err))
        self._send(HTTPStatus.OK, json.dumps(payload).encode(), "application/json")

    def _error(self, status: HTTPStatus, message: str) -> None:
        if self.command == "POST":  # the body may be unread: this connection cannot carry another request
            self.close_connection = True
        self._send(status, json.dumps({"error": message}).encode(), "application/json")

    def _send(self, status: HTTPStatus, data: bytes, content_type: str, policy: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in _HEADERS.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        if policy is not None:
            self.send_header("Content-Security-Policy", policy)
        self.end_headers()
        self.wfile.write(data)
