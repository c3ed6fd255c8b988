# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The bundles' conventions in one place: config layering, config ids, weight files, the latent scale factor.

Every bundle keeps what its configs share in ``configs/common.json`` (networks, text encoder, scheduler, labels,
scale factor); a train or inference config is layered on top of it, as MONAI model-zoo bundles layer theirs::

    python -m monai.bundle run --config_file "['configs/common.json','configs/inference.json']"

:func:`read_bundle_config` does the layering for Python callers, so a bundle written before ``common.json``
existed (one self-contained ``inference.json``) still reads.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.utils import optional_import
from torch import nn

from monai_xreal.errors import XRealInputError
from monai_xreal.io.atomic import atomic_path, write_text_atomically

safetensors_torch, has_safetensors = optional_import("safetensors.torch")

__all__ = [
    "COMMON_CONFIG",
    "NETWORK_IDS",
    "SCALE_FACTOR_FILE",
    "WEIGHT_STEMS",
    "bundle_config_files",
    "default_bundle_path",
    "has_weights",
    "initialise_bundle_weights",
    "load_bundle_weights",
    "load_weights",
    "named_list",
    "read_bundle_config",
    "read_scale_factor",
    "sampling_defaults",
    "save_bundle_weights",
    "save_weights",
    "weight_file",
    "write_scale_factor",
]

# the config every other config of a bundle is layered on, relative to the bundle root
COMMON_CONFIG = "configs/common.json"
# the latent scale factor that the diffusion training measured, read back by common.json's ``scale_factor``
SCALE_FACTOR_FILE = "models/scale_factor.json"
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


def bundle_config_files(
    bundle_root: str | Path, config_file: str | Sequence[str] = "configs/inference.json"
) -> list[Path]:
    """The config files to merge, in order: ``configs/common.json`` (when the bundle has one) then ``config_file``.

    Args:
        bundle_root: the bundle folder.
        config_file: one config or several to layer, relative to ``bundle_root`` (``common.json`` is not repeated
            when listed).

    Raises:
        XRealInputError: a listed file is missing (named).
    """
    root = Path(bundle_root)
    names = [config_file] if isinstance(config_file, (str, Path)) else list(config_file)
    files = [root / name for name in names]
    for path in files:
        if not path.is_file():
            raise XRealInputError("bundle", f"missing file {path}")
    common = root / COMMON_CONFIG
    if common.is_file() and not any(path.resolve() == common.resolve() for path in files):
        files.insert(0, common)
    return files


def read_bundle_config(
    bundle_root: str | Path, config_file: str | Sequence[str] = "configs/inference.json"
) -> ConfigParser:
    """A ``ConfigParser`` over the bundle's ``common.json`` layered under ``config_file``, and its metadata, with
    ``bundle_root`` set to ``bundle_root``.

    The result is what ``python -m monai.bundle run --config_file "['configs/common.json','<config_file>']"``
    parses: ids of ``config_file`` override those of ``common.json``.

    Args:
        bundle_root: the bundle folder.
        config_file: the config (or configs, merged in order) to read on top of ``configs/common.json``.

    Raises:
        XRealInputError: a missing file or invalid JSON (named).
    """
    root = Path(bundle_root)
    files = bundle_config_files(root, config_file)
    meta = root / "configs" / "metadata.json"
    if not meta.is_file():
        raise XRealInputError("bundle", f"missing file {meta}")
    parser = ConfigParser()
    try:
        parser.read_config([str(path) for path in files])
        parser.read_meta(str(meta))
    except json.JSONDecodeError as err:
        names = ", ".join(str(path) for path in (*files, meta))
        raise XRealInputError("bundle", f"invalid JSON in {names}: {err}") from err
    parser["bundle_root"] = str(root)
    return parser


def sampling_defaults(parser: ConfigParser) -> dict[str, Any]:
    """The bundle's values for the sampling knobs (``pipeline#sampling_defaults``; empty where it sets none)."""
    return dict(parser.get_parsed_content("pipeline#sampling_defaults", default={}) if "pipeline" in parser else {})


def named_list(named: Mapping[str, Any] | Sequence[Any] | None) -> list:
    """The values of a config's named dict (transforms, handlers) in order, leaving out those set to ``None``.

    Train configs name their transforms and handlers (``"train#deterministic_transforms": {"load": {...}, ...}``)
    so that an override replaces or adds one by name (``"train#event_handlers#noise_filter": "@noise_filter"``) or
    removes one (``null``); the component that needs a list calls this. A list is passed through (``None`` left out).
    """
    if named is None:
        return []
    values = named.values() if isinstance(named, Mapping) else named
    return [value for value in values if value is not None]


def read_scale_factor(path: str | Path) -> float:
    """The latent scale factor recorded in a JSON file (``{"scale_factor": ...}``, as
    :func:`monai_xreal.engines.latent_scale_factor` writes it).

    Raises:
        XRealInputError: the file is missing or has no number under ``scale_factor`` (named).
    """
    path = Path(path)
    if not path.is_file():
        raise XRealInputError("scale_factor", f"missing file {path} (the diffusion training writes it)")
    try:
        value = json.loads(path.read_text())["scale_factor"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise XRealInputError("scale_factor", f'{path} does not hold {{"scale_factor": <number>}}: {err}') from err
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise XRealInputError("scale_factor", f"{path}: scale_factor {value!r} is not a number")
    return float(value)


def write_scale_factor(path: str | Path, scale_factor: float, **extra: Any) -> Path:
    """Record ``scale_factor`` (and ``extra`` JSON values) in ``path``, as :func:`read_scale_factor` reads it."""
    return write_text_atomically(path, json.dumps({"scale_factor": float(scale_factor), **extra}, indent=2) + "\n")


def weight_file(bundle_root: str | Path, component: str) -> Path:
    """The weight file of a pipeline component: ``models/<stem>.safetensors`` if present, else ``models/<stem>.pt``."""
    models = Path(bundle_root) / "models"
    stem = WEIGHT_STEMS[component]
    for suffix in (".safetensors", ".pt"):
        if (models / f"{stem}{suffix}").is_file():
            return models / f"{stem}{suffix}"
    raise XRealInputError("bundle", f"missing weight file {models / (stem + '.pt')} for the {component}")


def has_weights(bundle_root: str | Path, component: str) -> bool:
    """Whether the bundle's ``models/`` holds the weights of a pipeline component (see :func:`weight_file`)."""
    stem = Path(bundle_root) / "models" / WEIGHT_STEMS[component]
    return any(stem.with_name(stem.name + suffix).is_file() for suffix in (".safetensors", ".pt"))


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
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            safetensors_torch.save_file(state, str(tmp))
        else:
            torch.save(state, tmp)
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
