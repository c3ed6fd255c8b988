# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Bad rows: an error by default, or, when the user asks, a skip that is counted and reported at the end."""

from __future__ import annotations

import logging

from monai_xreal.errors import XRealInputError

__all__ = ["RowSkips"]

logger = logging.getLogger(__name__)


class RowSkips:
    """Collects the errors of skipped rows when ``skip`` is on; re-raises them otherwise.

    Args:
        source: the file being read, for the report.
        skip: skip bad rows (counted) instead of stopping at the first.
    """

    def __init__(self, source: str, skip: bool = False) -> None:
        self.source, self.skip, self.errors = source, skip, []

    def handle(self, error: XRealInputError) -> None:
        if not self.skip:
            raise error
        self.errors.append(error)

    def report(self) -> int:
        """Log how many rows were skipped (and the first reason); returns the count."""
        if self.errors:
            logger.warning("%s: skipped %d bad row(s); first: %s", self.source, len(self.errors), self.errors[0])
        return len(self.errors)
