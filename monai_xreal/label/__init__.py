# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""MONAI Label integration: the ``xreal_generate`` and ``cxr_anatomy`` infer tasks and their app.

Needs the ``label`` extra (``pip install "monai-xreal[label]"``, see the README for the pinned set). The app folder
to pass to ``monailabel start_server --app`` is :data:`APP_DIR`; ``monai-xreal serve`` does it for you.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from monai_xreal.label.params import GenerateLimits, GenerateParams, RequestTooLarge

__all__ = ["APP_DIR", "GenerateLimits", "GenerateParams", "RequestTooLarge", "writable_app_dir"]

APP_DIR = Path(__file__).parent / "apps" / "xreal"


def writable_app_dir(target: Path | None = None) -> Path:
    """A folder ``monailabel start_server --app`` can run from.

    MONAI Label creates ``bin/``, ``lib/``, ``logs/`` and ``model/`` inside the app folder, which a read-only
    installation cannot hold: the packaged :data:`APP_DIR` is used when writable, otherwise (or when ``target`` is
    given) its entry point is copied to ``target`` (default ``$XDG_CACHE_HOME/monai_xreal/label_app``).
    """
    if target is None:
        if os.access(APP_DIR, os.W_OK):
            return APP_DIR
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        target = cache / "monai_xreal" / "label_app"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(APP_DIR / "main.py", target / "main.py")
    return target
