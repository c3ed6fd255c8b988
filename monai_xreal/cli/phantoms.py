# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal phantoms``: a paired phantom CXR set (image, anatomy, pathology, labels, report) and its datalist."""

from __future__ import annotations

import argparse
from pathlib import Path

from monai_xreal.cli.options import positive_int
from monai_xreal.errors import XRealInputError
from monai_xreal.io.formats import ARRAY_FORMATS as FORMATS

HELP = "write phantom CXRs with anatomy label maps, pathology masks, labels, reports and a MONAI datalist"


def _probability(text: str) -> tuple[str, float]:
    name, sep, value = text.rpartition("=")
    try:
        if not sep:
            raise ValueError
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=P, e.g. 'Cardiomegaly=0.5', got {text!r}") from None


def add_parser(commands) -> None:
    from monai_xreal.data.phantoms.catalogue import MAX_SIZE, MIN_SIZE, PHANTOM_FINDINGS

    p = commands.add_parser("phantoms", help=HELP, description=HELP + ".")
    p.add_argument("--num-images", type=positive_int, required=True, help="number of phantoms")
    p.add_argument("--size", type=int, default=128, help=f"image side in pixels, {MIN_SIZE}-{MAX_SIZE} (default: 128)")
    p.add_argument("--output-dir", type=Path, required=True, help="new folder for the set")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the set; phantom i is the same for any --num-images (default: 0)"
    )
    p.add_argument("--format", choices=sorted(FORMATS), default="png", help="file format (default: png)")
    p.add_argument("--validation-fraction", type=float, default=0.1, help="share kept for validation (default: 0.1)")
    p.add_argument(
        "--probability", type=_probability, action="append", default=[], metavar="NAME=P",
        help=f"chance of a finding (repeatable; default 0.2 each): {', '.join(PHANTOM_FINDINGS)}",
    )  # fmt: skip
    p.add_argument("--grid", type=Path, default=None, help="also write an overview PNG of the first phantoms")
    p.add_argument(
        "--lung-masks", type=Path, default=None, help="zip or folder of real lung masks (default: torchxrayvision's)"
    )
    p.add_argument(
        "--nih-boxes", type=Path, default=None, help="NIH BBox_List_2017.csv(.gz) (default: torchxrayvision's)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> Path:
    from monai_xreal.data.phantoms import PHANTOM_FINDINGS, PhantomGenerator
    from monai_xreal.simulation.dataset import write_phantom_set
    from monai_xreal.visualize import condition_grid, save_rgb

    probabilities = dict.fromkeys(PHANTOM_FINDINGS, 0.2) | dict(args.probability)
    if args.grid is not None and args.grid.suffix.lower() != ".png":
        raise XRealInputError("grid", f"must be a .png path, got {args.grid}")
    sources = {"lung_masks": args.lung_masks, "nih_boxes": args.nih_boxes}
    datalist = write_phantom_set(
        args.output_dir, args.num_images, args.size, args.seed, args.format, args.validation_fraction, probabilities,
        progress=True, **sources,
    )  # fmt: skip
    print(f"wrote {args.num_images} phantom(s) to {args.output_dir}; datalist: {datalist}")
    if (datalist.parent / "conditions.json").is_file():
        print(f"validation conditions (for evaluate): {datalist.parent / 'conditions.json'}")
    if args.grid is not None:
        generator = PhantomGenerator(args.size, args.seed, probabilities, **sources)
        shown = [generator(i) for i in range(min(args.num_images, 8))]
        save_rgb(condition_grid([(p.image, p.anatomy, p.pathology) for p in shown], columns=2), args.grid)
        print(f"overview: {args.grid}")
    return datalist
