# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The reader study's SQLite file: the blinded images, each reader's order, and every answer as it is given."""

from __future__ import annotations

import random
import secrets
import sqlite3
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from monai_xreal.errors import XRealInputError

__all__ = ["ANSWERS", "StudyStore"]

ANSWERS = ("real", "fake", "unsure")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS study (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    token TEXT UNIQUE NOT NULL,
    path TEXT NOT NULL,
    truth TEXT NOT NULL CHECK (truth IN ('real', 'fake'))
);
CREATE TABLE IF NOT EXISTS answers (
    reader INTEGER NOT NULL,
    image_id INTEGER NOT NULL REFERENCES images(id),
    answer TEXT NOT NULL CHECK (answer IN ('real', 'fake', 'unsure')),
    confidence INTEGER CHECK (confidence BETWEEN 1 AND 5),
    answered_at TEXT NOT NULL,
    PRIMARY KEY (reader, image_id)
);
"""


class StudyStore:
    """One study in one SQLite file; every answer is committed before the reader sees the next image.

    Images are known to readers only by a random token; each reader sees all of them once, in an order shuffled
    from the study seed and the reader's number (so a reader who comes back resumes at the same place).

    Args:
        path: the SQLite file (created with the study; reopened to continue it).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()  # one connection shared by the server's threads
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def setup(self, real: Sequence[str], fake: Sequence[str], readers: int, seed: int) -> None:
        """Start the study, or check that the file holds this one (same images, readers and seed)."""
        if readers < 1:
            raise XRealInputError("readers", f"must be a positive integer, got {readers}")
        settings = {"readers": str(readers), "seed": str(seed)}
        wanted = sorted([(str(p), "real") for p in real] + [(str(p), "fake") for p in fake])
        if not wanted:
            raise XRealInputError("real", "no images: the datalists are empty")
        with self._lock:
            stored = dict(self._db.execute("SELECT key, value FROM study").fetchall())
            if stored:
                have = sorted(self._db.execute("SELECT path, truth FROM images").fetchall())
                if have != wanted or any(stored.get(k) != v for k, v in settings.items()):
                    raise XRealInputError(
                        "db", f"{self.path} holds another study (images, readers or seed differ); use another --db"
                    )
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT INTO study VALUES (?, ?)", [*settings.items(), ("created", _now())])
            self._db.executemany("INSERT INTO images (token, path, truth) VALUES (?, ?, ?)",
                                 [(secrets.token_hex(8), path, truth) for path, truth in wanted])  # fmt: skip
            self._db.execute("COMMIT")

    @property
    def readers(self) -> int:
        return int(self._setting("readers"))

    def order(self, reader: int) -> list[int]:
        """The image ids in reader ``reader``'s order."""
        self._check_reader(reader)
        with self._lock:
            ids = [row[0] for row in self._db.execute("SELECT id FROM images ORDER BY id")]
        random.Random(f"{self._setting('seed')}:{reader}").shuffle(ids)
        return ids

    def next_image(self, reader: int) -> dict:
        """``{"token", "position", "total"}`` of the reader's next unanswered image, or ``{"done": True, ...}``."""
        order = self.order(reader)
        with self._lock:
            answered = {row[0] for row in self._db.execute("SELECT image_id FROM answers WHERE reader = ?", (reader,))}
            remaining = [i for i in order if i not in answered]
            progress = {"position": len(answered) + 1, "total": len(order)}
            if not remaining:
                return {"done": True, **progress}
            token = self._db.execute("SELECT token FROM images WHERE id = ?", (remaining[0],)).fetchone()[0]
        return {"done": False, "token": token, **progress}

    def image_path(self, token: str) -> Path | None:
        with self._lock:
            row = self._db.execute("SELECT path FROM images WHERE token = ?", (token,)).fetchone()
        return None if row is None else Path(row[0])

    def answer(self, reader: int, token: str, answer: str, confidence: int | None = None) -> bool:
        """Store an answer (committed at once); ``False`` if the reader had already answered that image (the first
        answer stands: readers cannot revise after seeing more images)."""
        self._check_reader(reader)
        if answer not in ANSWERS:
            raise XRealInputError("answer", f"must be one of {list(ANSWERS)}, got {answer!r}")
        if confidence is not None and (isinstance(confidence, bool) or confidence not in range(1, 6)):
            raise XRealInputError("confidence", f"must be an integer from 1 to 5, got {confidence!r}")
        with self._lock:
            row = self._db.execute("SELECT id FROM images WHERE token = ?", (token,)).fetchone()
            if row is None:
                raise XRealInputError("token", f"unknown image {token!r}")
            cursor = self._db.execute("INSERT OR IGNORE INTO answers VALUES (?, ?, ?, ?, ?)",
                                      (reader, row[0], answer, confidence, _now()))  # fmt: skip
        return cursor.rowcount == 1

    def answers(self) -> list[dict]:
        """Every answer with the image's truth: ``{"reader", "image", "truth", "answer", "confidence"}``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT a.reader, i.id, i.truth, a.answer, a.confidence FROM answers a JOIN images i "
                "ON a.image_id = i.id ORDER BY a.reader, a.answered_at"
            ).fetchall()
        return [dict(zip(("reader", "image", "truth", "answer", "confidence"), row, strict=True)) for row in rows]

    def _setting(self, key: str) -> str:
        with self._lock:
            row = self._db.execute("SELECT value FROM study WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise XRealInputError("db", f"{self.path} holds no study yet")
        return row[0]

    def _check_reader(self, reader: int) -> None:
        if isinstance(reader, bool) or not isinstance(reader, int) or not 1 <= reader <= self.readers:
            raise XRealInputError("reader", f"must be a reader number from 1 to {self.readers}, got {reader!r}")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
