# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The reader study's files: the SQLite answers, the frozen study definition and the readers' and owner's secrets.

Beside ``--db FILE.sqlite`` the study keeps two JSON files, both written whole or not at all and readable by their
owner only (mode 0600):

- ``FILE.study.json``, the study definition, frozen when the study is created: every image's path, SHA-256 and
  truth (real / fake), the seed and each reader's presentation order. The SHA-256 of this file is the study id,
  recorded in the database and named by every report; a definition edited afterwards, or an image whose bytes
  changed, makes the study refuse to start.
- ``FILE.secrets.json``: one random key per reader (their link), the owner's key (the report and the exports) and
  the key that derives each reader's image tokens. Deleting it revokes every link; the next start issues new ones.

The SQLite file is made 0600 too: it holds the truth and the answers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from monai_xreal.errors import XRealInputError
from monai_xreal.io.atomic import write_text_atomically
from monai_xreal.io.hashing import sha256_file

__all__ = ["ANSWERS", "STUDY_FORMAT", "StudyStore"]

ANSWERS = ("real", "fake", "unsure")
STUDY_FORMAT = "monai-xreal reader study 1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS study (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    token TEXT UNIQUE NOT NULL,  -- internal only: readers see per-reader tokens derived from the secrets
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
    """One study: answers in one SQLite file (each committed before the reader sees the next image), the frozen
    definition and the secrets beside it.

    Readers are known by their key only: :meth:`reader_for` maps a key to a reader number, and each reader knows
    the images only by tokens derived from the study's image key and the reader's number, so a token is worth
    nothing to another reader. Each reader sees every image once, in the frozen order (a reader who comes back
    resumes at the same place).

    Args:
        path: the SQLite file (created with the study; reopened to continue it or report on it).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.definition_path = self.path.with_name(f"{self.path.stem}.study.json")
        self.secrets_path = self.path.with_name(f"{self.path.stem}.secrets.json")
        self._lock = threading.Lock()  # one connection shared by the server's threads
        if not self.path.exists():  # the answers and the truth are the owner's only (SQLite's journals follow suit)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._definition: dict | None = None
        self._study_id: str | None = None
        self._images: dict[int, dict] = {}  # image id -> its entry of the definition
        self._secrets: dict | None = None
        self._tokens: dict[int, dict[str, int]] = {}  # reader -> image token -> image id
        self._token_of: dict[tuple[int, int], str] = {}  # (reader, image id) -> image token

    def close(self) -> None:
        self._db.close()

    # -- creating, checking and loading the study -----------------------------------------------------------------

    def setup(self, real: Sequence[str], fake: Sequence[str], readers: int, seed: int) -> bool:
        """Start the study, or check that the files hold this one (same images, readers and seed) and that no image
        changed since it was frozen. Returns whether new links were issued (a new study, or deleted secrets)."""
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
            else:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT INTO study VALUES (?, ?)", [*settings.items(), ("created", _now())])
                self._db.executemany("INSERT INTO images (token, path, truth) VALUES (?, ?, ?)",
                                     [(secrets.token_hex(8), path, truth) for path, truth in wanted])  # fmt: skip
                self._db.execute("COMMIT")
        if "study" not in stored:  # a new study (or one from before definitions were frozen): freeze it now
            self._freeze()
        self._load_definition()
        self.verify_images()
        issued = not self.secrets_path.exists()
        if issued:
            self._write_secrets()
        self._load_secrets()
        return issued

    def _freeze(self) -> None:
        with self._lock:
            rows = self._db.execute("SELECT id, path, truth FROM images ORDER BY id").fetchall()
        seed, readers = self._setting("seed"), int(self._setting("readers"))
        images = [{"id": i, "path": path, "sha256": _hash_image(path), "truth": truth} for i, path, truth in rows]
        orders = {}
        shuffle = secrets.SystemRandom().shuffle  # from the OS: a reader who knows the seed cannot rebuild an order
        for reader in range(1, readers + 1):
            ids = [row[0] for row in rows]
            shuffle(ids)
            orders[str(reader)] = ids
        definition = {"format": STUDY_FORMAT, "seed": int(seed), "readers": readers, "images": images,
                      "orders": orders}  # fmt: skip
        text = json.dumps(definition, indent=1) + "\n"
        _write_private(self.definition_path, text)
        study_id = hashlib.sha256(text.encode("utf-8")).hexdigest()
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO study VALUES ('study', ?)", (study_id,))

    def _load_definition(self) -> dict:
        if self._definition is not None:
            return self._definition
        study_id = self._setting("study")
        if not self.definition_path.is_file():
            raise XRealInputError("db", f"the study definition {self.definition_path} of {self.path} is missing")
        text = self.definition_path.read_bytes()
        if not hmac.compare_digest(hashlib.sha256(text).hexdigest(), study_id):
            raise XRealInputError("db", f"{self.definition_path} was changed after the study was created (its "
                                  f"SHA-256 is not the study id {study_id} recorded in {self.path})")  # fmt: skip
        self._definition, self._study_id = json.loads(text), study_id
        self._images = {image["id"]: image for image in self._definition["images"]}
        return self._definition

    def verify_images(self) -> None:
        """Refuse (``XRealInputError``) if any image is missing or its bytes changed since the study was frozen."""
        for image in self._load_definition()["images"]:
            if _hash_image(image["path"]) != image["sha256"]:
                raise XRealInputError("study", f"{image['path']} changed since study {self.study_id[:16]} was "
                                      "frozen (SHA-256 differs): restore it, or start a new study with another --db")  # fmt: skip

    def _write_secrets(self) -> None:
        keys = {
            "study": self.study_id,
            "owner": secrets.token_urlsafe(32),
            "readers": {str(r): secrets.token_urlsafe(32) for r in range(1, self.readers + 1)},
            "image_key": secrets.token_hex(32),
        }
        _write_private(self.secrets_path, json.dumps(keys, indent=1) + "\n")

    def _load_secrets(self) -> dict:
        if self._secrets is not None:
            return self._secrets
        if not self.secrets_path.is_file():
            raise XRealInputError("db", f"no links yet: {self.secrets_path} is missing (start the study to issue them)")
        if self.secrets_path.stat().st_mode & 0o077:
            os.chmod(self.secrets_path, 0o600)
        keys = json.loads(self.secrets_path.read_text(encoding="utf-8"))
        if keys.get("study") != self.study_id or set(keys["readers"]) != {str(r) for r in range(1, self.readers + 1)}:
            raise XRealInputError("db", f"{self.secrets_path} belongs to another study; delete it to issue new links")
        image_key = bytes.fromhex(keys["image_key"])
        for reader in range(1, self.readers + 1):
            self._tokens[reader] = {}
            for image in self._load_definition()["images"]:
                token = hmac.new(image_key, f"{reader}:{image['id']}".encode(), hashlib.sha256).hexdigest()[:32]
                self._tokens[reader][token] = image["id"]
                self._token_of[(reader, image["id"])] = token
        self._secrets = keys
        return keys

    # -- the study ---------------------------------------------------------------------------------------------------

    @property
    def study_id(self) -> str:
        """SHA-256 of the frozen study definition (its file's bytes)."""
        if self._study_id is None:
            self._load_definition()
        return self._study_id  # type: ignore[return-value]

    @property
    def definition(self) -> dict:
        """The frozen study definition: ``{"format", "seed", "readers", "images", "orders"}``."""
        return self._load_definition()

    @property
    def readers(self) -> int:
        return int(self._setting("readers"))

    @property
    def image_count(self) -> int:
        return len(self.definition["images"])

    def order(self, reader: int) -> list[int]:
        """The image ids in reader ``reader``'s frozen order."""
        self._check_reader(reader)
        return list(self.definition["orders"][str(reader)])

    # -- keys --------------------------------------------------------------------------------------------------------

    def reader_keys(self) -> dict[int, str]:
        """Each reader's secret key (what their link carries)."""
        return {int(r): key for r, key in self._load_secrets()["readers"].items()}

    def owner_key(self) -> str:
        """The owner's secret key (the report and the exports)."""
        return self._load_secrets()["owner"]

    def reader_for(self, key: str | None) -> int | None:
        """The reader whose key ``key`` is (compared in constant time), or ``None``."""
        found = None
        for reader, secret in self.reader_keys().items():
            if key is not None and hmac.compare_digest(_bytes(key), _bytes(secret)):
                found = reader
        return found

    def is_owner(self, key: str | None) -> bool:
        return key is not None and hmac.compare_digest(_bytes(key), _bytes(self.owner_key()))

    # -- readers' work -----------------------------------------------------------------------------------------------

    def next_image(self, reader: int) -> dict:
        """``{"token", "position", "total"}`` of the reader's next unanswered image (the token is this reader's
        own), or ``{"done": True, ...}``."""
        order = self.order(reader)
        self._load_secrets()
        with self._lock:
            answered = {row[0] for row in self._db.execute("SELECT image_id FROM answers WHERE reader = ?", (reader,))}
        remaining = [i for i in order if i not in answered]
        progress = {"position": len(answered) + 1, "total": len(order)}
        if not remaining:
            return {"done": True, **progress}
        return {"done": False, "token": self._token_of[(reader, remaining[0])], **progress}

    def image_for(self, reader: int, token: str) -> dict | None:
        """The definition's entry (``id``, ``path``, ``sha256``, ``truth``) of reader ``reader``'s image ``token``, or
        ``None`` if the token is not one of this reader's."""
        self._check_reader(reader)
        self._load_secrets()
        image_id = self._tokens[reader].get(token) if isinstance(token, str) else None
        return None if image_id is None else self._image(image_id)

    def answer(self, reader: int, token: str, answer: str, confidence: int | None = None) -> bool:
        """Store reader ``reader``'s answer on their image ``token`` (committed at once); ``False`` if the reader had
        already answered that image (the first answer stands: readers cannot revise after seeing more images)."""
        self._check_reader(reader)
        if answer not in ANSWERS:
            raise XRealInputError("answer", f"must be one of {list(ANSWERS)}, got {answer!r}")
        if confidence is not None and (isinstance(confidence, bool) or confidence not in range(1, 6)):
            raise XRealInputError("confidence", f"must be an integer from 1 to 5, got {confidence!r}")
        image = self.image_for(reader, token)
        if image is None:
            raise XRealInputError("image", "not an image of this reader")
        with self._lock:
            cursor = self._db.execute("INSERT OR IGNORE INTO answers VALUES (?, ?, ?, ?, ?)",
                                      (reader, image["id"], answer, confidence, _now()))  # fmt: skip
        return cursor.rowcount == 1

    def answers(self) -> list[dict]:
        """Every answer with the image's truth and SHA-256:
        ``{"reader", "image", "sha256", "truth", "answer", "confidence", "answered_at"}``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT reader, image_id, answer, confidence, answered_at FROM answers ORDER BY reader, answered_at"
            ).fetchall()
        result = []
        for reader, image_id, answer, confidence, answered_at in rows:
            image = self._image(image_id)
            result.append({"reader": reader, "image": image_id, "sha256": image["sha256"], "truth": image["truth"],
                           "answer": answer, "confidence": confidence, "answered_at": answered_at})  # fmt: skip
        return result

    def _image(self, image_id: int) -> dict:
        self._load_definition()
        return self._images[image_id]

    def _setting(self, key: str) -> str:
        with self._lock:
            row = self._db.execute("SELECT value FROM study WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise XRealInputError("db", f"{self.path} holds no study yet")
        return row[0]

    def _check_reader(self, reader: int) -> None:
        if isinstance(reader, bool) or not isinstance(reader, int) or not 1 <= reader <= self.readers:
            raise XRealInputError("reader", f"must be a reader number from 1 to {self.readers}, got {reader!r}")


def _hash_image(path: str) -> str:
    try:
        return sha256_file(path)
    except OSError as err:
        raise XRealInputError("study", f"cannot read image {path}: {err.strerror}") from None


def _write_private(path: Path, text: str) -> None:
    """``text`` to ``path`` whole or not at all, readable by its owner only (from the first byte written)."""
    write_text_atomically(path, text, mode=0o600)


def _bytes(key: str) -> bytes:
    return str(key).encode("utf-8", "replace")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
