# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal judge``: how the lung judge trained on real radiographs reads image sets (phantoms, simulated
radiographs, real images): its Dice with their label maps where they have them, and how sure it is."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from monai_xreal.cli.options import torch_device
from monai_xreal.errors import XRealInputError

HELP = "read image sets with the lung judge trained on real CXRs: Dice with their labels, feature distances, a figure"


def _named(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH (a datalist .json or an image), got {text!r}")
    return name, Path(path)


def add_parser(commands) -> None:
    p = commands.add_parser(
        "judge", help=HELP,
        description=HELP + ". Each set is a MONAI datalist (items with 'image' and, for Dice, 'anatomy'; its "
        "'training' and 'validation' lists) or one image file (DICOM, PNG...).",
    )  # fmt: skip
    p.add_argument("--set", dest="sets", type=_named, action="append", required=True, metavar="NAME=PATH",
                   help="an image set to read (repeatable)")  # fmt: skip
    p.add_argument("--num-images", type=int, default=16, help="images per set at most (default: 16)")
    p.add_argument("--size", type=int, default=256, help="side the images are read at (default: 256)")
    p.add_argument("--lung-judge", type=Path, default=None, help="a converted lung-judge bundle (default: packaged)")
    p.add_argument("--output", type=Path, required=True, help="report JSON to write")
    p.add_argument("--figure", type=Path, default=None, help="PNG: each set's first images with the judge's lungs")
    p.add_argument("--device", type=torch_device, default=None, help="torch device (default: cpu)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> dict:
    import torch

    from monai_xreal.metrics.judges import RealLungJudge, feature_distance, judge_image_set, read_image_set
    from monai_xreal.visualize import image_grid, save_rgb

    if args.num_images < 1 or args.size < 64:
        raise XRealInputError("num-images", "--num-images must be positive and --size at least 64")
    for flag, path, suffix in (("output", args.output, ".json"), ("figure", args.figure, ".png")):
        if path is not None and (path.suffix.lower() != suffix or not path.parent.is_dir()):
            raise XRealInputError(flag, f"must be a {suffix} path in an existing folder, got {path}")
    sets = {name: read_image_set(path, args.num_images, args.size) for name, path in args.sets}
    judge = RealLungJudge.load(args.lung_judge, args.device or torch.device("cpu"))
    report, features, tiles = {}, {}, []
    for name, (images, anatomy) in sets.items():
        report[name], features[name], shown = judge_image_set(judge, images, anatomy)
        tiles.extend(shown[:4])
    for name in sets:  # how far every other set's images lie from this set's, in the judge's features
        if len(features[name]) > 1:  # a spread needs two images at least
            report[name]["feature_distance"] = {
                other: round(feature_distance(features[name], features[other]), 3) for other in sets if other != name
            }
    args.output.write_text(json.dumps({"judge": "cheXwhatsApp lung U-Net (trained on real CXRs)", "sets": report},
                                      indent=2))  # fmt: skip
    print(json.dumps(report, indent=2))
    if args.figure is not None:
        save_rgb(image_grid(tiles, columns=4), args.figure)
        print(f"figure: {args.figure}")
    return report
