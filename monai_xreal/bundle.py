# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The generator bundle's conventions in one place: config ids, weight files, metadata lookups."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.utils import optional_import
from torch import nn

from monai_xreal.errors import XRealInputError

safetensors_torch, has_safetensors = optional_import("safetensors.torch")

__all__ = [
    "NETWORK_IDS",
    "WEIGHT_STEMS",
    "default_bundle_path",
    "read_bundle_config",
    "weight_file",
    "load_weights",
    "save_weights",
    "load_bundle_weights",
    "save_bundle_weights",
    "initialise_bundle_weights",
]

# pipeline attribute -> bundle config id; network_def (what MONAI tools expect) points at diffusion_unet_def
NETWORK_IDS = {
    "unet": "diffusion_unet_def",
    "autoencoder": "autoencoder_def",
    "anatomy_controller": "anatomy_controller_def",
    "controlnet": "controlnet_def",
    "prompt_adapter": "report_adapter_def",
}
# pipeline attribute -> weight file stem under models/ (MONAI's convention: model.pt is network_def's)
WEIGHT_STEMS = {
    "unet": "model",
    "autoencoder": "model_autoencoder",
    "anatomy_controller": "model_anatomy_controller",
    "controlnet": "model_controlnet",
    "text_encoder": "model_text_encoder",
    "prompt_adapter": "model_report_adapter",
}


def _bundled_modules(pipeline: Any) -> dict[str, nn.Module]:
    """The pipeline's modules whose weights live in the bundle (a text encoder loaded from its own folder does not)."""
    modules = {component: getattr(pipeline, component, None) for component in WEIGHT_STEMS}
    return {k: m for k, m in modules.items() if m is not None and getattr(m, "weights_in_bundle", True)}


def default_bundle_path(name: str = "cxr_xreal") -> Path:
    """The bundle embedded with the package: the source checkout's ``bundles/`` or the installed ``share/`` copy."""
    candidates = [
        Path(__file__).resolve().parents[1] / "bundles" / name,
        Path(sys.prefix) / "share" / "monai_xreal" / "bundles" / name,
    ]
    for candidate in candidates:
        if (candidate / "configs" / "metadata.json").is_file():
            return candidate
    raise XRealInputError("bundle", f"no embedded bundle {name!r} found (looked in {', '.join(map(str, candidates))})")


def read_bundle_config(bundle_root: str | Path, config_file: str = "configs/inference.json") -> ConfigParser:
    """A ``ConfigParser`` over the bundle's config and metadata, with ``bundle_root`` set to ``bundle_root``."""
    root = Path(bundle_root)
    config, meta = root / config_file, root / "configs" / "metadata.json"
    for path in (config, meta):
        if not path.is_file():
            raise XRealInputError("bundle", f"missing file {path}")
    parser = ConfigParser()
    try:
        parser.read_config(str(config))
        parser.read_meta(str(meta))
    except json.JSONDecodeError as err:
        raise XRealInputError("bundle", f"invalid JSON in {config} or {meta}: {err}") from err
    parser["bundle_root"] = str(root)
    return parser


def weight_file(bundle_root: str | Path, component: str) -> Path:
    """The weight file of a pipeline component: ``models/<stem>.safetensors`` if present, else ``models/<stem>.pt``."""
    models = Path(bundle_root) / "models"
    stem = WEIGHT_STEMS[component]
    for suffix in (".safetensors", ".pt"):
        if (models / f"{stem}{suffix}").is_file():
            return models / f"{stem}{suffix}"
    raise XRealInputError("bundle", f"missing weight file {models / (stem + '.pt')} for the {component}")


def load_weights(module: nn.Module, path: str | Path) -> nn.Module:
    """Load a plain state dict (``.pt`` via ``torch.load(weights_only=True)``, or ``.safetensors``) strictly."""
    path = Path(path)
    if path.suffix == ".safetensors":
        if not has_safetensors:
            raise XRealInputError("bundle", f"{path} needs the safetensors package")
        state = safetensors_torch.load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise XRealInputError("bundle", f"{path} does not match the network in the config: {first}") from err
    return module


def save_weights(module: nn.Module, path: str | Path) -> Path:
    """Save ``module``'s state dict as ``.pt`` or ``.safetensors`` (by suffix), via a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    if path.suffix == ".safetensors":
        safetensors_torch.save_file(state, str(tmp))
    else:
        torch.save(state, tmp)
    tmp.replace(path)
    return path


def load_bundle_weights(pipeline: Any, bundle_root: str | Path) -> Any:
    """Load every network of ``pipeline`` that is present from the bundle's ``models/`` folder."""
    for component, module in _bundled_modules(pipeline).items():
        load_weights(module, weight_file(bundle_root, component))
    return pipeline


def save_bundle_weights(pipeline: Any, bundle_root: str | Path, suffix: str = ".pt") -> list[Path]:
    """Save every network of ``pipeline`` under the bundle's ``models/`` folder; returns the files written."""
    return [
        save_weights(module, Path(bundle_root) / "models" / f"{WEIGHT_STEMS[component]}{suffix}")
        for component, module in _bundled_modules(pipeline).items()
    ]


def initialise_bundle_weights(bundle_root: str | Path, seed: int = 0, suffix: str = ".pt") -> list[Path]:
    """Write freshly initialised weights for every network a bundle's ``pipeline`` defines (demo and test bundles).

    Args:
        bundle_root: the bundle folder, with ``configs/inference.json`` and ``configs/metadata.json``.
        seed: torch seed for the initialisation, so the files are reproducible.
        suffix: ``".pt"`` or ``".safetensors"``.
    """
    parser = read_bundle_config(bundle_root)
    parser["device"] = "cpu"
    torch.manual_seed(seed)
    return save_bundle_weights(parser.get_parsed_content("pipeline"), bundle_root, suffix)
