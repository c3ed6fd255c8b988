# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal edit``: repaint a region of a real radiograph (add a finding, or remove one with "No Finding");
everything outside the region is written back unchanged, in the input's own format."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monai_xreal.cli.options import (
    add_knob_options,
    check_output_file,
    non_negative_int,
    output_folder,
    positive_int,
    sampling_knobs,
    torch_device,
)
from monai_xreal.errors import XRealInputError

HELP = "edit a radiograph inside a region: add a finding, or remove one with 'No Finding'"


def _boxes(text: str) -> list[list[float]]:
    """``x0,y0,x1,y1[;x0,y0,x1,y1...]`` in the image's pixels (x: column, y: row; ends exclusive)."""
    try:
        boxes = [[float(v) for v in box.split(",")] for box in text.split(";") if box.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not x0,y0,x1,y1[;x0,y0,x1,y1...]") from None
    if not boxes or any(len(box) != 4 or box[2] <= box[0] or box[3] <= box[1] for box in boxes):
        raise argparse.ArgumentTypeError(f"{text!r}: each box is x0,y0,x1,y1 with x0 < x1 and y0 < y1")
    return boxes


def add_parser(commands) -> None:
    from monai_xreal.io.formats import IMAGE_FORMATS
    from monai_xreal.pipeline.settings import EDIT_KNOBS

    p = commands.add_parser("edit", help=HELP, description=HELP + ". The image (DICOM, PNG or NIfTI) is encoded, "
                            "the region repainted by the pathology stage guided by the prompt, and the change "
                            "written back inside the region only: outside it the file's stored values are kept bit "
                            "for bit. A DICOM stays in its study, with a new series and instance, marked derived "
                            "and synthetic. Several --region / --boxes make several edits, applied in order (masks "
                            "first); --prompt is given once for all or once per edit.")  # fmt: skip
    p.add_argument("--image", type=Path, required=True, help="the radiograph: DICOM, PNG (8/16-bit grey) or NIfTI")
    p.add_argument("--region", type=Path, action="append", default=[],
                   help="edit region mask of the image's size (PNG, NIfTI or DICOM; non-zero = may change)")  # fmt: skip
    p.add_argument("--boxes", type=_boxes, action="append", default=[], metavar="X0,Y0,X1,Y1[;...]",
                   help="edit region as boxes in the image's pixels (x: column, y: row)")  # fmt: skip
    p.add_argument("--keep", type=Path, default=None, help="mask of what must not change, even inside a region")
    p.add_argument("--prompt", action="append", default=[],
                   help="the finding to paint ('Pleural Effusion') or 'No Finding' to remove one")  # fmt: skip
    p.add_argument("--num-images", type=positive_int, default=1, help="edited versions (seeds SEED, SEED+1, ...)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the first version (default: 0)")
    p.add_argument("--bundle", type=Path, default=None, help="generator bundle (default: the embedded cxr_xreal)")
    add_knob_options(p, EDIT_KNOBS)
    p.add_argument("--format", choices=sorted(IMAGE_FORMATS), default=None,
                   help="output format (default: the input's, which keeps it bit-exact outside the region; another "
                   "format is written as a generated image is)")  # fmt: skip
    p.add_argument("--output-dir", type=output_folder, required=True, help="folder for the edits and their sidecars")
    p.add_argument("--figure", type=Path, default=None, metavar="FILE.png",
                   help="also write before / after / change figures of the first version")  # fmt: skip
    p.add_argument("--device", type=torch_device, default=None, help="torch device (default: CUDA if available)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> dict:
    """Edit ``--image`` ``--num-images`` times; versions a previous run finished are skipped."""
    import torch

    from monai_xreal.pipeline import XRealPipeline
    from monai_xreal.synthesis.editing import edit_file

    check_output_file(args.figure, "--figure", ".png")
    if not args.region and not args.boxes:
        raise XRealInputError("region", "give an edit region: --region MASK or --boxes X0,Y0,X1,Y1")
    device = args.device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pipe = XRealPipeline.from_bundle(args.bundle, device=device)
    seeds = range(args.seed, args.seed + args.num_images)
    results = edit_file(pipe, args.image, args.output_dir, args.region, args.boxes, args.prompt, args.keep, seeds,
                        args.format, args.bundle, args.scheduler, sampling_knobs(args))  # fmt: skip
    written = [(path, edited) for path, edited in results if edited is not None]
    skipped = len(results) - len(written)
    print(f"wrote {len(written)} edit(s) of {args.image} to {args.output_dir}"
          + (f" ({skipped} already there)" if skipped else "") + ":")  # fmt: skip
    for path, _ in written:
        print(f"  {path}")
    if args.figure is not None and written:
        from monai_xreal.io import load_cxr
        from monai_xreal.visualize import edit_figure, save_rgb

        edited = written[0][1]
        save_rgb(edit_figure(load_cxr(args.image), edited.image, edited.region), args.figure)
        print(f"figure: {args.figure}")
    if skipped and not written:
        print("nothing to do: every version is there", file=sys.stderr)
    return {"written": len(written), "skipped": skipped, "output_dir": args.output_dir}
