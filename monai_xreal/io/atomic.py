# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Files written whole or not at all: a hidden temporary file beside the target, flushed to disk, renamed into place.

Every single-file write of the package goes through here (the JSON reports and sidecars, manifests, weights, the
scale factor, noise-filter tables); writers of several files at once stage them in a hidden folder the same way
(:class:`~monai_xreal.synthesis.writer.SyntheticImageWriter`, :func:`~monai_xreal.io.writers.staged_folder`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "signals_deferred", "write_text_atomically"]


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import: setting it later would race with threads creating files


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while the block runs: the few file-system calls that make or remove a temporary
    file must not be cut in two (the CLI turns both signals into ``KeyboardInterrupt``, which would leave the file
    behind). A signal that arrives meanwhile is raised again, to the handlers as they were, as soon as the block
    ends. Python runs signal handlers in the main thread only (and any thread of the process may receive the
    signal, so masking it in one thread would not hold it back): elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    previous = {s: handler for s, handler in previous.items() if handler is not None}  # None: not set from Python
    for s in previous:
        signal.signal(s, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for signum in caught:
            signal.raise_signal(signum)


@contextlib.contextmanager
def atomic_path(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """A temporary path to write ``path``'s content to; renamed onto ``path`` when the block succeeds, removed when
    it fails. The folder is made if needed; the temporary name is hidden (``.<name>.<random>``) and keeps the
    suffix, so writers that choose the format by extension (PNG, safetensors) work on it. The file gets
    ``mode``, or (``None``) the permissions of a file made normally: ``mkstemp`` would leave it private."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:] if path.suffixes[-1:] == [".gz"] else path.suffixes[-1:])  # .nii.gz
    temporary = None
    try:  # made and removed with signals held back, so an interruption cannot leave it behind
        with signals_deferred():
            handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
            os.close(handle)
            temporary = Path(name)
        yield temporary
        temporary.chmod(mode if mode is not None else 0o666 & ~_UMASK)  # mkstemp made it private
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        if temporary is not None:
            with signals_deferred():
                temporary.unlink(missing_ok=True)
        raise


def write_text_atomically(path: str | Path, text: str, mode: int | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all (``mode``: see :func:`atomic_path`); returns ``path``."""
    with atomic_path(path, mode) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)
