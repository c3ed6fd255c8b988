# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Which local bundle each infer task runs (shared by the app and ``monai-xreal serve``; no MONAI Label import)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from monai_xreal.bundle import default_bundle_path
from monai_xreal.errors import XRealInputError

__all__ = ["MODELS", "resolve_bundle", "resolve_models"]

# infer task name -> the bundle it runs by default
MODELS = {"xreal_generate": "cxr_xreal", "xreal_edit": "cxr_xreal", "cxr_anatomy": "cxr_anatomy_segmentation"}


def resolve_models(models: str) -> list[str]:
    """The task names of ``--conf models``: ``all`` (or empty) or a comma-separated subset of :data:`MODELS`."""
    names = list(MODELS) if models.strip() in ("", "all") else [m.strip() for m in models.split(",")]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        raise XRealInputError("models", f"unknown {unknown}; this app serves {sorted(MODELS)} (or 'all')")
    return names


def resolve_bundle(model: str, conf: Mapping[str, str]) -> Path:
    """The bundle folder of a task: ``conf["bundle_<model>"]`` (a path, or a name under ``conf["bundles"]``).

    ``conf["bundles"]`` defaults to this package's embedded bundles. Bundles are local folders only: nothing is
    ever downloaded.

    Raises:
        XRealInputError: the folder lacks ``configs/inference.json`` or ``configs/metadata.json`` (named).
    """
    folder = Path(conf["bundles"]) if conf.get("bundles") else default_bundle_path(MODELS[model]).parent
    chosen = Path(conf.get(f"bundle_{model}") or MODELS[model])
    root = chosen if chosen.is_absolute() else folder / chosen
    for required in ("configs/inference.json", "configs/metadata.json"):
        if not (root / required).is_file():
            raise XRealInputError(
                f"bundle_{model}", f"missing {root / required} (set --conf bundles DIR or --conf bundle_{model} PATH)"
            )
    return root
