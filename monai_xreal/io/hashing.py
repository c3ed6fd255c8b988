# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""SHA-256 of files (remembered per path, mtime and size) and of arrays (dtype, shape and values)."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import torch

__all__ = ["sha256_array", "sha256_file"]


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks; remembered per (path, mtime, size), since a multi-GB checkpoint is
    hashed for every image's provenance and for a bundle's metadata."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _sha256(path: str, mtime_ns: int, size: int, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_array(array: np.ndarray | torch.Tensor) -> str:
    """Hex SHA-256 of an array's dtype, shape and C-ordered values: equal arrays, equal digests, whatever file
    format (or box list) they came from."""
    values = np.ascontiguousarray(array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else array)
    digest = hashlib.sha256(f"{values.dtype.str}{values.shape}".encode())
    digest.update(values.tobytes())
    return digest.hexdigest()
