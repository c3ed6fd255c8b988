# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Reading the datasets' CSV tables (plain or gzipped) with errors that name the file and the row."""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator, Sequence
from pathlib import Path

from monai_xreal.errors import XRealInputError

__all__ = ["read_header", "read_rows", "row_float"]


def _open(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    return opener(path, "rt", newline="", encoding="utf-8-sig")  # type: ignore[operator]


def read_header(path: str | Path) -> list[str]:
    """The column names of a ``.csv`` or ``.csv.gz`` table, stripped of surrounding spaces."""
    with _open(Path(path)) as handle:
        return [cell.strip() for cell in next(csv.reader(handle), [])]


def read_rows(path: str | Path, required: Sequence[str]) -> Iterator[tuple[int, list[str], dict[str, str]]]:
    """Yield ``(line_number, raw_cells, row_by_header)`` for each data row of a ``.csv`` or ``.csv.gz`` table.

    Header names are stripped of surrounding spaces (SIIM's header reads ``ImageId, EncodedPixels``).

    Raises:
        XRealInputError: a missing file, or a header lacking one of the ``required`` columns.
    """
    path = Path(path)
    if not path.is_file():
        raise XRealInputError(str(path), "no such file")
    with _open(path) as handle:
        reader = csv.reader(handle)
        header = [cell.strip() for cell in next(reader, [])]
        missing = [column for column in required if column not in header]
        if missing:
            raise XRealInputError(str(path), f"missing column(s) {missing}; the header is {header}")
        for cells in reader:
            if cells:
                yield reader.line_num, cells, dict(zip(header, (cell.strip() for cell in cells)))


def row_float(value: str, path: str | Path, line: int, column: str) -> float:
    """A table cell as a float, or an error naming the file, row and column."""
    try:
        return float(value)
    except ValueError as err:
        raise XRealInputError(f"{path}:{line}", f"column {column!r} is not a number: {value!r}") from err
