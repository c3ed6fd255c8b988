# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal adherence``: do generated CXRs follow the requested anatomy? Dice read back by the segmenter."""

from __future__ import annotations

import json
from pathlib import Path

from monai_xreal.cli.options import torch_device
from monai_xreal.errors import XRealInputError

HELP = "measure anatomy adherence: Dice between requested label maps and the segmentation of the generated CXRs"


def add_parser(commands) -> None:
    p = commands.add_parser("adherence", help=HELP, description=HELP + ", on fresh phantom conditions.")
    p.add_argument("--bundle", type=Path, default=None, help="generator bundle (default: the embedded cxr_xreal)")
    p.add_argument(
        "--segmenter",
        type=Path,
        default=None,
        help="segmentation bundle (default: the embedded cxr_anatomy_segmentation)",
    )
    p.add_argument("--num", type=int, default=64, help="number of conditions (default: 64)")
    p.add_argument("--seed", type=int, default=1000, help="phantom seed of the conditions; keep it apart from training")
    p.add_argument("--steps", type=int, default=50, help="sampling steps per stage (default: 50)")
    p.add_argument("--guidance-scale", type=float, default=7.0, help="classifier-free guidance (default: 7.0)")
    p.add_argument("--control", choices=("xreal", "controlnet"), default="xreal", help="control mode (default: xreal)")
    p.add_argument("--batch-size", type=int, default=8, help="conditions per pipeline call (default: 8)")
    p.add_argument("--device", type=torch_device, default=None, help="torch device (default: the bundle's)")
    p.add_argument("--output", type=Path, default=None, help="write the summary and per-sample Dice as JSON")
    p.add_argument("--figure", type=Path, default=None, help="write a PNG grid of generated images with their masks")
    p.set_defaults(run=run)


def run(args) -> None:
    from monai.data import DataLoader

    from monai_xreal import XRealPipeline
    from monai_xreal.data.phantoms import MIN_SIZE, PhantomDataset
    from monai_xreal.metrics import load_segmenter, measure_anatomy_adherence
    from monai_xreal.transforms import BuildPromptd
    from monai_xreal.visualize import condition_grid, save_rgb

    for name in ("num", "steps", "batch_size"):
        if getattr(args, name) < 1:
            raise XRealInputError(f"--{name.replace('_', '-')}", "must be a positive integer")
    for flag, path in (("--output", args.output), ("--figure", args.figure)):
        if path is not None and not path.parent.is_dir():
            raise XRealInputError(flag, f"folder {path.parent} does not exist")
    pipeline = XRealPipeline.from_bundle(args.bundle, device=args.device)
    segmenter = load_segmenter(args.segmenter, device=pipeline.device)
    size = max(MIN_SIZE, pipeline.spatial_shape[0])  # the pipeline resizes the masks to its grid
    conditions = PhantomDataset(args.num, transform=BuildPromptd(keys="labels"), size=size, seed=args.seed)
    loader = DataLoader(conditions, batch_size=args.batch_size, shuffle=False, num_workers=0)
    # sample i is generated with seed (phantom seed + i), whatever the batch size
    batches = (
        {**batch, "seed": [args.seed + start * args.batch_size + i for i in range(len(batch["prompt"]))]}
        for start, batch in enumerate(loader)
    )
    result = measure_anatomy_adherence(
        pipeline, segmenter, batches, progress=True, num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale, control=args.control,
    )  # fmt: skip
    summary = {**result.summary(), "steps": args.steps, "guidance_scale": args.guidance_scale,
               "control": args.control, "phantom_seed": args.seed}  # fmt: skip
    print(json.dumps(summary, indent=2))
    if args.output is not None:
        args.output.write_text(json.dumps({**summary, "dice": result.dice.tolist()}, indent=2))
    if args.figure is not None:
        samples = [
            (i.numpy(), a.numpy(), p.numpy()) for i, a, p in zip(result.images, result.anatomy, result.pathology)
        ]
        save_rgb(condition_grid(samples[:8], columns=4), args.figure)
