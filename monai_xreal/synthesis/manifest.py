# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``manifest.jsonl``: one line per finished image, appended only once its file is complete."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable
from pathlib import Path

from monai_xreal.io.atomic import write_text_atomically

__all__ = ["Manifest", "write_atomically"]


write_atomically = write_text_atomically  # the package's one atomic write (monai_xreal.io.atomic)


class Manifest:
    """An append-only JSON-lines journal shared by the processes of a run.

    Each line is one ``write`` under an exclusive ``flock``, then ``fsync``: processes never interleave lines,
    and a killed process leaves at most one unterminated last line, which :meth:`repair` cuts off. The last line
    of a key wins (a sample redone after its file was found damaged).

    Args:
        path: the journal file.
        key: the fields that identify a line's sample.
    """

    def __init__(self, path: str | Path, key: tuple[str, ...] = ("condition_id", "sample_index")) -> None:
        self.path = Path(path)
        self.key = tuple(key)

    def repair(self) -> None:
        """Cut an unterminated last line (a write interrupted by a kill); call before any process appends."""
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            with open(self.path, "r+b") as f:
                f.truncate(end)

    def entries(self) -> dict[tuple, dict]:
        """``key values -> line`` for every well-formed line."""
        found: dict[tuple, dict] = {}
        if not self.path.is_file():
            return found
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
                found[tuple(entry[k] for k in self.key)] = entry
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # an interrupted line: its sample is redone
        return found

    def append(self, entry: dict) -> None:
        line = (json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n").encode()
        with open(self.path, "ab") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def rewrite(self, entries: Iterable[dict]) -> None:
        """Replace the journal by ``entries`` in the given order (the finished dataset's canonical manifest)."""
        write_atomically(self.path, "".join(json.dumps(e, sort_keys=True, ensure_ascii=False) + "\n" for e in entries))
