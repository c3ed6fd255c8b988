# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Files written whole or not at all: a hidden temporary file beside the target, flushed to disk, renamed into place.

Every single-file write of the package goes through here (the JSON reports and sidecars, manifests, weights, the
scale factor, noise-filter tables); writers of several files at once stage them in a hidden folder the same way
(:class:`~monai_xreal.synthesis.writer.SyntheticImageWriter`, :func:`~monai_xreal.io.writers.staged_folder`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "write_text_atomically"]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s content to; renamed onto ``path`` when the block succeeds, removed when
    it fails. The folder is made if needed; the temporary name is hidden (``.<name>.<random>``) and keeps the
    suffix, so writers that choose the format by extension (PNG, safetensors) work on it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix="".join(path.suffixes[-1:]), dir=path.parent)
    os.close(handle)
    temporary = Path(temporary)
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all; returns ``path``."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)
