# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal anatomy``: a real radiograph's anatomy label map, read by judges trained on real images, ready to
generate from (``monai-xreal generate --anatomy``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from monai_xreal.cli.options import add_judge_options, torch_device
from monai_xreal.errors import XRealInputError

HELP = "read a real chest radiograph's anatomy label map (lungs, heart, upper mediastinum) to generate from"
_WORK_SIZE = 512  # the lung judge's input side: the image is read at this size, the labels written at the image's


def add_parser(commands) -> None:
    p = commands.add_parser(
        "anatomy", help=HELP,
        description=HELP + ": the lungs from a segmenter trained on real CXRs, the heart from LiteMedSAM in the box "
        "the lungs frame, the upper mediastinum by the label map's rule.",
    )  # fmt: skip
    p.add_argument("--image", type=Path, required=True, help="a frontal chest radiograph (DICOM, PNG, JPEG, ...)")
    p.add_argument("--output", type=Path, required=True, help="label map to write (.png or .nii.gz)")
    p.add_argument("--figure", type=Path, default=None, help="also write a PNG of the image with the labels tinted")
    add_judge_options(p)
    p.add_argument("--device", type=torch_device, default=None, help="torch device (default: cpu)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> Path:
    import torch
    import torch.nn.functional as F

    from monai_xreal.io import load_cxr, save_images
    from monai_xreal.metrics import load_judges, read_anatomy
    from monai_xreal.visualize import overlay_masks, save_rgb

    suffixes = {".png": "png", ".gz": "nii.gz", ".nii": "nii"}
    fmt = suffixes.get(args.output.suffix.lower())
    if fmt is None or (fmt == "nii.gz" and not args.output.name.lower().endswith(".nii.gz")):
        raise XRealInputError("output", f"must end in .png, .nii.gz or .nii, got {args.output.name}")
    if args.figure is not None and args.figure.suffix.lower() != ".png":
        raise XRealInputError("figure", f"must be a .png path, got {args.figure}")
    if args.lung_judge is None or args.heart_judge is None:
        raise XRealInputError("judges", "reading anatomy needs both the lung judge and the heart judge")
    for flag, path in (("output", args.output), ("figure", args.figure)):
        if path is not None and not path.parent.is_dir():
            raise XRealInputError(flag, f"folder {path.parent} does not exist")
    device = args.device or torch.device("cpu")
    image = load_cxr(args.image).as_tensor().float()
    size = tuple(image.shape[1:])
    scale = _WORK_SIZE / max(size)
    work = F.interpolate(image[None], size=tuple(max(1, round(s * scale)) for s in size), mode="area")[0]
    lung_judge, heart_judge = load_judges(args.lung_judge, args.heart_judge, device=device)
    labels = read_anatomy(work, lung_judge, heart_judge)
    full = F.interpolate(labels[None].float(), size=size, mode="nearest-exact")[0].to(torch.uint8)
    stem = args.output.name[: -len(".nii.gz")] if fmt == "nii.gz" else args.output.stem
    (written,) = save_images(full[None], [stem], args.output.parent, fmt, labels=True)
    counts = {name: int((labels == value).sum()) for name, value in
              (("right lung", 1), ("left lung", 2), ("heart", 3), ("upper mediastinum", 4))}  # fmt: skip
    print(f"wrote {written} ({size[0]} x {size[1]}; pixels at {work.shape[1]} x {work.shape[2]}: {counts})")
    if args.figure is not None:
        save_rgb(overlay_masks(work.numpy(), labels.numpy()), args.figure)
        print(f"figure: {args.figure}")
    return written
