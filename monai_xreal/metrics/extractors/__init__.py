# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Feature extractors for FID-style metrics on CXRs, from local weight files only (nothing is ever downloaded).

Every extractor maps ``(B, 1, H, W)`` float images in [0, 1] to ``(B, feature_dim)`` features and does its own
preprocessing per the definition it reproduces. :func:`load_feature_extractor` builds one by name:

* ``"inception-pytorch-fid"``: Inception-v3 (FID form), 2048-d, pytorch-fid's input definition;
* ``"inception-torch-fidelity"``: the same network, torch-fidelity's input definition (uint8, TF-1 resize);
* ``"xrv-densenet121-res224-all"``: torchxrayvision's all-datasets DenseNet-121, 1024-d, plus pathology outputs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

from monai_xreal.errors import XRealInputError
from monai_xreal.metrics.extractors.base import FeatureExtractor, read_state_dict
from monai_xreal.metrics.extractors.inception import (
    PYTORCH_FID_WEIGHTS_FILE,
    PYTORCH_FID_WEIGHTS_URL,
    TORCH_FIDELITY_WEIGHTS_FILE,
    TORCH_FIDELITY_WEIGHTS_URL,
    FIDInceptionV3,
    resize_bilinear_tf1,
)
from monai_xreal.metrics.extractors.xrv import (
    XRV_CONVERT_ONE_LINER,
    XRV_OP_THRESHS,
    XRV_PATHOLOGIES,
    XRV_WEIGHTS_FILE,
    XRV_WEIGHTS_URL,
    XRVDenseNet121,
    apply_op_threshs,
    monai_to_xrv_key,
    xrv_to_monai_key,
)

__all__ = [
    "FEATURE_EXTRACTORS",
    "PYTORCH_FID_WEIGHTS_FILE",
    "PYTORCH_FID_WEIGHTS_URL",
    "TORCH_FIDELITY_WEIGHTS_FILE",
    "TORCH_FIDELITY_WEIGHTS_URL",
    "XRV_CONVERT_ONE_LINER",
    "XRV_OP_THRESHS",
    "XRV_PATHOLOGIES",
    "XRV_WEIGHTS_FILE",
    "XRV_WEIGHTS_URL",
    "FIDInceptionV3",
    "FeatureExtractor",
    "XRVDenseNet121",
    "apply_op_threshs",
    "load_feature_extractor",
    "monai_to_xrv_key",
    "read_state_dict",
    "resize_bilinear_tf1",
    "xrv_to_monai_key",
]

logger = logging.getLogger(__name__)

# name -> builder of the (randomly initialised) network
FEATURE_EXTRACTORS: dict[str, Callable[[], FeatureExtractor]] = {
    "inception-pytorch-fid": lambda: FIDInceptionV3("pytorch-fid"),
    "inception-torch-fidelity": lambda: FIDInceptionV3("torch-fidelity"),
    "xrv-densenet121-res224-all": XRVDenseNet121,
}


def load_feature_extractor(
    name: str, weights: str | Path | None, device: torch.device | str = "cpu"
) -> FeatureExtractor:
    """A feature extractor by name, with weights from a local file, frozen and in eval mode on ``device``.

    Args:
        name: one of :data:`FEATURE_EXTRACTORS`.
        weights: the published weight file (or a plain state dict in its key layout), ``.pt``/``.pth`` or
            ``.safetensors``; a folder is searched for ``<name>.safetensors``, ``<name>.pt``, then the published file
            name. ``None`` keeps random weights, for tests only (a warning is logged).
        device: where it runs.

    Returns:
        The extractor: ``extractor(images)`` maps ``(B, 1, H, W)`` in [0, 1] to ``(B, extractor.feature_dim)``.

    Raises:
        XRealInputError: an unknown ``name`` (argument ``"name"``); a missing, unreadable or non-matching weight file
            (argument ``"weights"``, naming the file to provide and where it is published).
    """
    if name not in FEATURE_EXTRACTORS:
        raise XRealInputError("name", f"unknown feature extractor {name!r}; choose one of {sorted(FEATURE_EXTRACTORS)}")
    extractor = FEATURE_EXTRACTORS[name]()
    if weights is None:
        logger.warning("%s: no weights given, randomly initialised; its features mean nothing (tests only)", name)
    else:
        path = _find_weights(Path(weights).expanduser(), extractor)
        extractor.load_published_state_dict(read_state_dict(path, extractor.convert_hint), source=str(path))
    return extractor.requires_grad_(False).eval().to(device)


def _find_weights(path: Path, extractor: FeatureExtractor) -> Path:
    if path.is_file():
        return path
    stem = Path(extractor.weights_file).stem
    names = [f"{extractor.name}.safetensors", f"{extractor.name}.pt", extractor.weights_file, f"{stem}.safetensors"]
    if path.is_dir():
        for candidate in (path / name for name in names):
            if candidate.is_file():
                return candidate
        where = f"{path} holds none of {names}"
    else:
        where = f"{path} not found"
    needs = f"{extractor.name} needs {extractor.weights_file}, published at {extractor.weights_source}"
    if extractor.convert_hint != FeatureExtractor.convert_hint:
        needs += f", converted to a plain state dict: {extractor.convert_hint}"
    raise XRealInputError("weights", f"{where}; {needs}. Nothing is downloaded here: fetch it and pass its path")
