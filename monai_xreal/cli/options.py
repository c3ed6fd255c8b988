# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Argument types shared by the subcommands: a bad value becomes argparse's one-line usage error."""

from __future__ import annotations

import argparse

import torch

__all__ = ["torch_device"]


def torch_device(text: str) -> torch.device:
    """``--device``: a torch device this machine has (``cpu``, ``cuda``, ``cuda:1``...)."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device") from err
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has no such CUDA device")
    if device.type not in ("cpu", "cuda", "mps", "xpu"):
        raise argparse.ArgumentTypeError(f"{text!r}: unsupported device type {device.type!r}")
    return device
