# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Packages whose names are imported when first used (PEP 562), so that ``--help`` and light modules stay fast."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, exports: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` that imports ``name`` from ``exports[name]`` on first use.

    Args:
        package: the package's ``__name__``.
        exports: name -> module, absolute (``monai_xreal.io.readers``) or relative to ``package`` (``readers``).
    """

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = exports[name] if exports[name].startswith("monai_xreal.") else f"{package}.{exports[name]}"
        return getattr(importlib.import_module(module), name)

    return __getattr__
