# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""MONAI Generative (``generative`` package, 0.2.x) state dicts into MONAI core networks, checked key by key.

MONAI's own ``load_old_state_dict`` knows the renames (attention projections, ``to_out.0`` -> ``out_proj``,
``conv`` -> ``postconv``) but seeds its result with the network's current weights and ignores leftovers, so a missing
key silently keeps its random initialisation. Here the network is filled with NaN first and every key the renames
did not consume is collected, so both cases become errors that name the keys.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping

import torch
from torch import nn

from monai_xreal.errors import XRealInputError
from monai_xreal.interop.compvis import load_exactly

__all__ = ["load_generative_state"]


def load_generative_state(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """Load a MONAI Generative (or already MONAI core) state dict into ``module`` exactly.

    Args:
        module: a MONAI network with ``load_old_state_dict`` (``DiffusionModelUNet``, ``AutoencoderKL``, ...).
        state: the old tensors.
        source: the file, for messages.

    Raises:
        XRealInputError: a key the renames expect but the file lacks, a key nothing uses, a shape mismatch, or a
            parameter left unset; each names the key.
    """
    if set(state) <= set(module.state_dict()):  # already MONAI core names
        return load_exactly(module, state, source)
    remaining = dict(state)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.fill_(float("nan"))
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its progress
            module.load_old_state_dict(remaining)
    except KeyError as err:
        raise XRealInputError("input", f"{source} lacks the key {err.args[0]!r} ({type(module).__name__})") from err
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise XRealInputError("input", f"{source} does not fit {type(module).__name__}: {first}") from err
    if remaining:
        raise XRealInputError(
            "input", f"{source}: {len(remaining)} key(s) no rename uses, e.g. {sorted(remaining)[:3]}"
        )
    unset = [name for name, p in module.named_parameters() if torch.isnan(p).any()]
    if unset:
        raise XRealInputError("input", f"{source} leaves {len(unset)} parameter(s) unset, e.g. {unset[:3]}")
    return module
