# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Finding the checkpoint a training bundle resumes from."""

from __future__ import annotations

from pathlib import Path

__all__ = ["latest_checkpoint"]


def latest_checkpoint(folder: str | Path, pattern: str = "checkpoint*.pt") -> str | None:
    """The newest file in ``folder`` matching ``pattern`` (by modification time, then name), or ``None``.

    A training config resumes with a ``CheckpointLoader`` whose ``load_path`` is this and which is
    ``"_disabled_"`` when it is ``None`` (a fresh output folder, or one that does not exist yet).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = [p for p in folder.glob(pattern) if p.is_file()]
    if not found:
        return None
    return str(max(found, key=lambda p: (p.stat().st_mtime_ns, p.name)))
