# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The feature-extractor interface and reading weight files in their publishers' layout, without any download."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from monai.utils import optional_import
from torch import nn

from monai_xreal.errors import XRealInputError

safetensors_torch, has_safetensors = optional_import("safetensors.torch")

__all__ = ["FeatureExtractor", "read_state_dict"]


class FeatureExtractor(nn.Module):
    """A frozen network that maps grayscale CXRs to one feature vector each, with its own input definition.

    ``forward`` takes ``(B, 1, H, W)`` float images in [0, 1] (any ``H``, ``W``) and returns ``(B, feature_dim)``
    float features. Subclasses give :meth:`preprocess` (resize, channels, intensities as the reproduced definition
    does) and :meth:`extract` (the network on preprocessed input), and may rename state-dict keys between their own
    layout and the published weight file's with :meth:`_published_to_own` / :meth:`_own_to_published_key`.

    Attributes:
        name: the registry name, e.g. ``"inception-pytorch-fid"``.
        feature_dim: ``D``, the length of one feature vector.
        weights_file: the published weight file this network loads.
        weights_source: where that file is published.
        convert_hint: how to turn the published file into a plain state dict when it is not one already.
    """

    name: str = ""
    feature_dim: int = 0
    weights_file: str = ""
    weights_source: str = ""
    convert_hint: str = "save its state_dict() with torch.save (or safetensors.torch.save_file)"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` in [0, 1] to the network's input, per the reproduced definition."""
        raise NotImplementedError

    def extract(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` features of already preprocessed inputs."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, feature_dim)`` float features of ``(B, 1, H, W)`` images in [0, 1]."""
        return self.extract(self.preprocess(self._as_input(images)))

    def _as_input(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 1 or not images.is_floating_point():
            raise XRealInputError(
                "images",
                f"{self.name} expects (B, 1, H, W) float images in [0, 1], got {images.dtype} {tuple(images.shape)}",
            )
        reference = next(self.parameters())
        return images.to(device=reference.device, dtype=reference.dtype)

    # --- the published weight files' layout ---------------------------------------------------------------------

    def _published_to_own(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename (and consume any extra entries of) a state dict in the published layout to this module's keys."""
        return state

    def _own_to_published_key(self, key: str) -> str:
        return key

    def published_state_dict(self) -> dict[str, torch.Tensor]:
        """This module's weights under the published file's key names, as :meth:`load_published_state_dict` reads."""
        return {self._own_to_published_key(k): v for k, v in self.state_dict().items()}

    def load_published_state_dict(self, state: Mapping[str, torch.Tensor], source: str = "weights") -> None:
        """Load a state dict in the published layout; every network tensor must be present with its shape.

        BatchNorm ``num_batches_tracked`` counters are optional: several published files predate them and they
        take no part in inference.

        Raises:
            XRealInputError: (argument ``"weights"``) naming the missing, unexpected or misshapen keys; ``source``
                (the file) leads the message.
        """
        own = self._published_to_own(dict(state))
        expected = self.state_dict()
        for key, value in expected.items():
            if key.endswith("num_batches_tracked") and key not in own:
                own[key] = value
        missing = [k for k in expected if k not in own]
        unexpected = [k for k in own if k not in expected]
        misshapen = [k for k in expected if k in own and tuple(own[k].shape) != tuple(expected[k].shape)]
        if missing or unexpected or misshapen:
            problems = []
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)):
                if keys:
                    problems.append(
                        f"{len(keys)} {label} (e.g. {', '.join(self._own_to_published_key(k) for k in keys[:3])})"
                    )
            raise XRealInputError(
                "weights", f"{source} does not fit {self.name} ({self.weights_file}): {'; '.join(problems)}"
            )
        self.load_state_dict(own, strict=True)


def read_state_dict(path: str | Path, convert_hint: str = FeatureExtractor.convert_hint) -> dict[str, torch.Tensor]:
    """A plain state dict from ``path``: ``.safetensors``, or anything else via ``torch.load(weights_only=True)``.

    Never unpickles arbitrary objects, so a file holding a whole pickled model is refused with ``convert_hint``.
    A checkpoint dict that wraps the weights under ``"state_dict"`` is unwrapped.

    Raises:
        XRealInputError: (argument ``"weights"``) for an unreadable file or one that is not a state dict.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        if not has_safetensors:
            raise XRealInputError("weights", f"{path} needs the safetensors package")
        try:
            return dict(safetensors_torch.load_file(str(path), device="cpu"))
        except Exception as err:  # safetensors' own error type is not importable by a stable name
            raise XRealInputError("weights", f"{path} cannot be read as a safetensors file: {err}") from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise XRealInputError(
            "weights",
            f"{path} is not a plain state dict (likely a whole pickled model, which is never unpickled here); "
            f"convert it: {convert_hint}",
        ) from err
    except (OSError, RuntimeError, EOFError) as err:
        raise XRealInputError("weights", f"{path} cannot be read as a torch weight file: {err}") from err
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise XRealInputError("weights", f"{path} holds no state dict of tensors; convert it: {convert_hint}")
    return dict(state)
