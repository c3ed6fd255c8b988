# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The one exception type for bad user input, so that front ends (CLI, MONAI Label) can report it in one line."""

from __future__ import annotations

__all__ = ["XRealInputError", "XRealInputWarning"]


class XRealInputError(ValueError):
    """Bad input from a user: a file, a mask, a prompt or a bundle that cannot be used.

    Args:
        argument: the name of the argument (or datalist field) at fault, e.g. ``"anatomy"``.
        message: what is wrong, in one line.
    """

    def __init__(self, argument: str, message: str) -> None:
        self.argument = argument
        self.message = message
        super().__init__(f"{argument}: {message}")


class XRealInputWarning(UserWarning):
    """Input that is allowed but probably not what the user meant (an all-background anatomy map, a prompt naming
    no finding, a map stretched to the model grid); front ends print it in one line, like the errors."""
