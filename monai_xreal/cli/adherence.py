# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal adherence``: do generated CXRs follow the requested anatomy? Dice read back by the project's
segmenter and, reported apart, by judges it did not train (a lung segmenter trained on real CXRs, LiteMedSAM)."""

from __future__ import annotations

import json
from pathlib import Path

from monai_xreal.cli.options import (
    add_judge_options,
    add_knob_options,
    check_output_file,
    make_parent,
    sampling_knobs,
    torch_device,
)
from monai_xreal.errors import XRealInputError

HELP = "measure anatomy adherence: Dice between requested label maps and the segmentation of the generated CXRs"


def add_parser(commands) -> None:
    p = commands.add_parser(
        "adherence", help=HELP,
        description=HELP + ", on fresh conditions: simulated radiographs' (held-out lung shapes, a seed apart from "
        "training), phantoms', or a conditions datalist's.",
    )  # fmt: skip
    p.add_argument("--bundle", type=Path, default=None, help="generator bundle (default: the embedded cxr_xreal)")
    p.add_argument(
        "--segmenter", type=Path, default=None,
        help="segmentation bundle (default: the embedded cxr_anatomy_segmentation)",
    )  # fmt: skip
    add_judge_options(p)
    p.add_argument("--source", choices=("simulated", "phantoms"), default="simulated",
                   help="where the conditions come from (default: simulated radiographs)")  # fmt: skip
    p.add_argument("--conditions", type=Path, default=None,
                   help="a conditions datalist instead of --source (anatomy required in each)")  # fmt: skip
    p.add_argument("--lung-shapes", choices=("all", "train", "held-out"), default="held-out",
                   help="simulated: the real lung outlines to warp towards (default: held-out)")  # fmt: skip
    p.add_argument("--num-images", type=int, default=64, help="number of conditions (default: 64)")
    p.add_argument("--seed", type=int, default=1000, help="seed of the conditions; keep it apart from training")
    add_knob_options(p)
    p.add_argument("--control", choices=("xreal", "controlnet"), default="xreal", help="control mode (default: xreal)")
    p.add_argument("--batch-size", type=int, default=8, help="conditions per pipeline call (default: 8)")
    p.add_argument("--device", type=torch_device, default=None, help="torch device (default: the bundle's)")
    p.add_argument("--output", type=Path, default=None, help="write the summary and per-sample Dice as JSON")
    p.add_argument("--figure", type=Path, default=None, help="write a PNG grid of generated images with their masks")
    p.set_defaults(run=run)


def _condition_batches(args, size: int):
    """Batches of ``anatomy``, ``pathology``, ``prompt`` and ``seed`` (sample i has seed ``args.seed + i``)."""
    from monai.data import DataLoader

    from monai_xreal.transforms import BuildPromptd

    if args.conditions is not None:
        yield from _datalist_batches(args)
        return
    if args.source == "phantoms":
        from monai_xreal.data.phantoms import MIN_SIZE, PhantomDataset

        dataset = PhantomDataset(args.num_images, transform=BuildPromptd(keys="labels"), size=max(MIN_SIZE, size),
                                 seed=args.seed)  # fmt: skip
    else:
        from monai_xreal.data.paired import PairedDataset
        from monai_xreal.simulation.simulator import MIN_SIZE, RadiographSimulator

        simulator = RadiographSimulator(size=max(MIN_SIZE, size), seed=args.seed, lung_shapes=args.lung_shapes)
        dataset = PairedDataset(simulator, args.num_images, transform=BuildPromptd(keys="labels"))
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False, num_workers=0)
    for start, batch in enumerate(loader):
        yield {**batch, "seed": [args.seed + start * args.batch_size + i for i in range(len(batch["prompt"]))]}


def _datalist_batches(args):
    import torch

    from monai_xreal.data import load_conditions
    from monai_xreal.io import load_mask
    from monai_xreal.text.demographics import condition_prompt

    conditions = [c for c in load_conditions(args.conditions, base_seed=args.seed) if "anatomy" in c][: args.num_images]
    if not conditions:
        raise XRealInputError("conditions", f"{args.conditions} has no condition with an anatomy")
    # a pipeline call takes conditions of one kind: with a finding region or without
    for kind in (True, False):
        group = [c for c in conditions if ("pathology" in c) == kind]
        for i in range(0, len(group), args.batch_size):
            part = group[i : i + args.batch_size]
            anatomy = [load_mask(c["anatomy"], "anatomy") for c in part]
            size = anatomy[0].shape[1:]
            resize = [torch.nn.functional.interpolate(a[None].float(), size=size, mode="nearest-exact")[0]
                      for a in anatomy]  # fmt: skip
            batch = {"anatomy": torch.stack(resize), "prompt": [condition_prompt(c) for c in part],
                     "seed": [c["seed"] for c in part]}  # fmt: skip
            if kind:
                masks = [load_mask(c["pathology"], "pathology")[None].float() for c in part]
                batch["pathology"] = torch.cat([torch.nn.functional.interpolate(m, size=size) for m in masks])
            yield batch


def run(args) -> None:
    from monai_xreal import XRealPipeline
    from monai_xreal.metrics import load_judges, load_segmenter, measure_anatomy_adherence
    from monai_xreal.visualize import condition_grid, save_rgb

    for name in ("num_images", "batch_size"):
        if getattr(args, name) < 1:
            raise XRealInputError(f"--{name.replace('_', '-')}", "must be a positive integer")
    check_output_file(args.output, "--output")
    check_output_file(args.figure, "--figure", ".png")
    pipeline = XRealPipeline.from_bundle(args.bundle, device=args.device)
    segmenter = load_segmenter(args.segmenter, device=pipeline.device)
    lung_judge, heart_judge = load_judges(args.lung_judge, args.heart_judge, device=pipeline.device)
    settings = pipeline.settings(args.scheduler, **sampling_knobs(args))  # the bundle's defaults filled in
    result = measure_anatomy_adherence(
        pipeline, segmenter, _condition_batches(args, pipeline.spatial_shape[0]), progress=True,
        scheduler=args.scheduler, control=args.control, lung_judge=lung_judge, heart_judge=heart_judge,
        **settings.knobs(),
    )  # fmt: skip
    source = str(args.conditions) if args.conditions is not None else args.source
    summary = {**result.summary(), "sampling": settings.as_dict(), "control": args.control, "conditions": source,
               "seed": args.seed}  # fmt: skip
    if args.conditions is None and args.source == "simulated":
        summary["lung_shapes"] = args.lung_shapes
    print(json.dumps(summary, indent=2))
    if args.output is not None:
        per_sample = {"dice": result.dice.tolist()}
        if result.judges.lungs is not None:
            per_sample["real_lung_judge_dice"] = result.judges.lungs.tolist()
        if result.judges.heart is not None:
            per_sample["heart_box_judge_dice"] = result.judges.heart.tolist()
        make_parent(args.output).write_text(json.dumps({**summary, **per_sample}, indent=2))
    if args.figure is not None:
        samples = [
            (i.numpy(), a.numpy(), p.numpy()) for i, a, p in zip(result.images, result.anatomy, result.pathology)
        ]
        save_rgb(condition_grid(samples[:8], columns=4), make_parent(args.figure))
