# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal generate``: CXRs from an anatomy mask, a pathology mask and a prompt."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm.auto import tqdm

from monai_xreal.control import SCHEDULERS
from monai_xreal.cli.options import torch_device
from monai_xreal.errors import XRealInputError
from monai_xreal.io import FORMATS, load_mask, save_images, staged_output

HELP = "generate CXRs that follow an anatomy mask, a pathology mask and a prompt"


def add_parser(commands) -> None:
    p = commands.add_parser("generate", help=HELP, description=HELP + ".")
    p.add_argument(
        "--bundle", type=Path, default=None, help="generator bundle folder (default: the embedded cxr_xreal)"
    )
    p.add_argument("--anatomy", type=Path, help="anatomy label map (PNG, NIfTI or DICOM)")
    p.add_argument("--pathology", type=Path, help="pathology mask, 1 where the finding goes (PNG, NIfTI or DICOM)")
    p.add_argument("--prompt", default="", help="finding or report text, e.g. 'Cardiomegaly' (default: empty)")
    p.add_argument("--num-images", type=int, default=1, help="images to generate (seeds SEED, SEED+1, ...)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first image (default: 0)")
    # sampling knobs default to the bundle's values for its weights (XReal's: 100 steps, 7.0, 0.2, 0.5, eta 1.0)
    p.add_argument("--num-inference-steps", type=int, default=None, help="reverse steps per stage (default: bundle's)")
    p.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance (default: bundle's)")
    p.add_argument("--anatomy-soft-value", type=float, default=None, help="blend weight outside organs")
    p.add_argument("--anatomy-step-fraction", type=float, default=None, help="share of steps with anatomy blending")
    p.add_argument("--eta", type=float, default=None, help="DDIM eta (default: bundle's)")
    p.add_argument("--scheduler", choices=sorted(SCHEDULERS), default=None, help="sampler (default: the bundle's)")
    p.add_argument("--batch-size", type=int, default=4, help="images per network call (default: 4)")
    p.add_argument("--output-dir", type=Path, required=True, help="folder for the images")
    p.add_argument("--format", choices=sorted(FORMATS), default="png", help="image format (default: png)")
    p.add_argument("--prefix", default="xreal", help="file name prefix (default: xreal)")
    p.add_argument(
        "--device", type=torch_device, default=None, help="torch device (default: cuda if available, else cpu)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> list[Path]:
    from monai_xreal.pipeline import XRealPipeline

    for name in ("num_images", "batch_size", "num_inference_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise XRealInputError(name, f"must be a positive integer, got {getattr(args, name)}")
    anatomy = None if args.anatomy is None else load_mask(args.anatomy, "anatomy")
    pathology = None if args.pathology is None else load_mask(args.pathology, "pathology")
    device = args.device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pipe = XRealPipeline.from_bundle(args.bundle, device=device)
    pipe.prepare_conditions(anatomy, pathology, args.prompt)  # every bad input fails here, before any work

    batches = [range(i, min(i + args.batch_size, args.num_images)) for i in range(0, args.num_images, args.batch_size)]
    steps = args.num_inference_steps or pipe.sampling_defaults["num_inference_steps"]
    steps_per_batch = steps * (2 if pathology is not None else 1)
    with (
        staged_output(args.output_dir) as staging,
        tqdm(total=len(batches) * steps_per_batch, unit="step", desc="generating") as bar,
    ):
        for batch in batches:
            n = len(batch)
            images = pipe(
                anatomy=None if anatomy is None else anatomy[None].expand(n, -1, -1, -1),
                pathology=None if pathology is None else pathology[None].expand(n, -1, -1, -1),
                prompt=[args.prompt] * n,
                num_inference_steps=args.num_inference_steps,
                guidance_scale=args.guidance_scale,
                anatomy_soft_value=args.anatomy_soft_value,
                anatomy_step_fraction=args.anatomy_step_fraction,
                eta=args.eta,
                scheduler=args.scheduler,
                seed=[args.seed + i for i in batch],
                callback=lambda *_: bar.update(1),
            )
            if not torch.isfinite(images).all():
                raise XRealInputError("bundle", "the networks produced NaN or infinite values")
            save_images(images, [f"{args.prefix}_seed{args.seed + i}" for i in batch], staging, args.format)
        written = sorted(p.name for p in staging.iterdir())
    paths = [args.output_dir / name for name in written]
    print(f"wrote {len(paths)} image(s) to {args.output_dir}:")
    for path in paths:
        print(f"  {path}")
    return paths
