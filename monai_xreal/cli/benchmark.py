# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal benchmark``: sampling speed, overhead and memory side by side, with Dice beside every figure."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from monai_xreal.cli.options import check_output_file, positive_int, torch_device
from monai_xreal.errors import XRealInputError

HELP = "benchmark controllable sampling: XReal's reference recipe against the fast settings, in one run"


def add_parser(commands) -> None:
    from monai_xreal.benchmark.recipes import FAST_RECIPE
    from monai_xreal.benchmark.recipes import VARIANT_NAMES as VARIANTS

    p = commands.add_parser(
        "benchmark", help=HELP,
        description=HELP + " (same weights, same machine): images/s, UNet evaluations per image, overhead over the "
        "network time, peak memory and anatomy Dice; then text-to-image against a plain MONAI scheduler loop.",
    )  # fmt: skip
    p.add_argument("--bundle", type=Path, default=None, help="generator bundle (default: the embedded cxr_xreal)")
    p.add_argument("--segmenter", type=Path, default=None, help="anatomy judge bundle (default: the embedded one)")
    p.add_argument("--full-size", action="store_true",
                   help="instead of a bundle: XReal's networks at full size (518M-parameter UNet, 64x64x3 latents, "
                   "256x256 images, as a conversion of its release builds them) with random weights and the "
                   "embedded bundle's sampling defaults; speed and memory only (no Dice: the images mean nothing)")  # fmt: skip
    p.add_argument("--num-images", type=int, default=8, help="conditions per measurement (default: 8)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="batch sizes (default: 1 8)")
    p.add_argument("--num-inference-steps", type=int, default=FAST_RECIPE.num_inference_steps,
                   help=f"steps of the fast recipe (default: {FAST_RECIPE.num_inference_steps})")  # fmt: skip
    p.add_argument("--scheduler", choices=("ddim", "pndm", "ddpm"), default=FAST_RECIPE.scheduler,
                   help=f"solver of the fast recipe (default: {FAST_RECIPE.scheduler})")  # fmt: skip
    p.add_argument("--eta", type=float, default=FAST_RECIPE.eta, help="DDIM eta of the fast recipe")
    p.add_argument("--repeats", type=positive_int, default=3, help="rounds over the rows; each row reports its median "
                   "images/s and the range (default: 3)")  # fmt: skip
    p.add_argument("--reference-steps", type=int, default=100, help="steps of XReal's recipe (default: 100)")
    p.add_argument("--skip-reference", action="store_true", help="measure the fast recipe only")
    p.add_argument("--overhead-point", type=int, nargs=2, default=[2, 20], metavar=("BATCH", "STEPS"),
                   help="batch and steps of the overhead headline (default: 2 20)")  # fmt: skip
    p.add_argument("--variants", nargs="*", default=None, choices=list(VARIANTS), metavar="VARIANT",
                   help=f"execution variants on the fast recipe: {', '.join(VARIANTS)} (default: all on a GPU, "
                   "none on CPU)")  # fmt: skip
    p.add_argument("--no-text-to-image", action="store_true", help="skip the plain-loop comparison")
    p.add_argument("--against-diffusers", type=Path, default=None, metavar="FOLDER",
                   help="instead: convert this diffusers Stable Diffusion folder as `convert --from diffusers` does "
                   "and time its text-to-image sampling against diffusers' StableDiffusionPipeline on the same "
                   "weights, steps (--num-inference-steps), guidance (--guidance-scale), batches (--batch-sizes) "
                   "and noise, alternating, --repeats rounds")  # fmt: skip
    p.add_argument("--samplers", action="store_true",
                   help="instead: compare controlled samplers (XReal's 100+100 steps down to 12 UNet evaluations per "
                   "image) on --num-images held-out conditions: own and real-CXR-judge Dice, placement, KID, "
                   "images/s")  # fmt: skip
    p.add_argument("--recipes", nargs="+", default=None, metavar="RECIPE",
                   help="with --samplers: the recipes to compare, of: xreal-100+100 fast-20+20 fast-20+20-feather "
                   "noise-4+4 noise-6+3-feather noise-4+4-feather data-4+4-feather data-6+3-feather (default: all)")  # fmt: skip
    p.add_argument("--figure", type=Path, default=None, help="with --samplers: write a PNG of where each recipe's "
                   "finding went (image and change map per recipe, mask outlined)")  # fmt: skip
    p.add_argument("--bf16", action="store_true", help="with --against-diffusers: both pipelines under the same "
                   "bfloat16 autocast")  # fmt: skip
    p.add_argument("--guidance-scale", type=float, default=7.5,
                   help="guidance of the --against-diffusers comparison (default: 7.5, Stable Diffusion's)")  # fmt: skip
    p.add_argument("--seed", type=int, default=1000, help="seed of the conditions (default: 1000)")
    p.add_argument("--source", choices=("simulated", "phantoms", "sample"), default="simulated",
                   help="conditions: simulated radiographs' (held-out lung outlines), phantoms', or the embedded "
                   "bundle's sample condition (timing only; needs no data package) (default: simulated)")  # fmt: skip
    p.add_argument("--device", type=torch_device, default=None,
                   help="torch device (default: the bundle's; with --full-size, CUDA when there is one)")  # fmt: skip
    p.add_argument("--output", type=Path, default=None, help="write the results as JSON")
    p.set_defaults(run=run)


def run(args) -> None:
    from monai_xreal import XRealPipeline
    from monai_xreal.benchmark import FAST_RECIPE, REFERENCE_RECIPE, VARIANTS, format_table, run_benchmark
    from monai_xreal.metrics import load_segmenter

    counts = {"--num-images": [args.num_images], "--batch-sizes": args.batch_sizes, "--num-inference-steps": [args.num_inference_steps],
              "--reference-steps": [args.reference_steps], "--overhead-point": args.overhead_point}  # fmt: skip
    for flag, values in counts.items():
        if any(v < 1 for v in values):
            raise XRealInputError(flag, "must be positive integers")
    largest = max([*args.batch_sizes, args.overhead_point[0]])
    if largest > args.num_images:
        raise XRealInputError("--num-images", f"must be at least the largest batch ({largest})")
    if args.eta < 0:
        raise XRealInputError("--eta", "must be >= 0")
    if args.output is not None and (not args.output.parent.is_dir() or args.output.is_dir()):
        raise XRealInputError("--output", f"{args.output} is a folder, or its folder does not exist")
    check_output_file(args.figure, "--figure", ".png")
    if args.bf16 and args.against_diffusers is None:
        raise XRealInputError("--bf16", "goes with --against-diffusers (the benchmark's own bf16 row is the variant "
                              "bf16-autocast)")  # fmt: skip
    if args.full_size:
        clashes = {"--bundle": args.bundle, "--segmenter": args.segmenter, "--samplers": args.samplers,
                   "--against-diffusers": args.against_diffusers}  # fmt: skip
        for flag, given in clashes.items():
            if given:
                raise XRealInputError(flag, "does not go with --full-size (random weights: no bundle to read, "
                                      "nothing to judge)")  # fmt: skip
    if args.against_diffusers is not None:
        return _against_diffusers(args)
    if args.full_size:
        pipeline, segmenter = _full_size(args), None
    else:
        pipeline = XRealPipeline.from_bundle(args.bundle, device=args.device)
        segmenter = load_segmenter(args.segmenter, device=pipeline.device)
    if args.samplers:
        return _samplers(args, pipeline, segmenter)
    variants = (
        args.variants if args.variants is not None else (list(VARIANTS) if pipeline.device.type == "cuda" else [])
    )
    fast = replace(FAST_RECIPE, num_inference_steps=args.num_inference_steps, scheduler=args.scheduler, eta=args.eta)
    reference = replace(REFERENCE_RECIPE, num_inference_steps=args.reference_steps)
    results = run_benchmark(
        pipeline, segmenter, num_images=args.num_images, batch_sizes=args.batch_sizes,
        recipes=(fast,) if args.skip_reference else (reference, fast), overhead_point=tuple(args.overhead_point),
        text_to_image=not args.no_text_to_image, variants=variants, seed=args.seed,
        source=args.source, repeats=args.repeats,
    )  # fmt: skip
    print(format_table(results))
    if args.output is not None:
        from monai_xreal.io.atomic import write_text_atomically

        write_text_atomically(args.output, json.dumps(results, indent=2))
        print(f"wrote {args.output}")


def _full_size(args):
    import torch

    from monai_xreal.benchmark.full_size import xreal_size_pipeline

    return xreal_size_pipeline(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _against_diffusers(args) -> None:
    from monai_xreal.benchmark.against_diffusers import compare_with_diffusers, format_diffusers_comparison

    results = compare_with_diffusers(
        args.against_diffusers, batch_sizes=args.batch_sizes, num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale, repeats=args.repeats, seed=args.seed, device=args.device, bf16=args.bf16,
    )  # fmt: skip
    print(format_diffusers_comparison(results))
    if args.output is not None:
        from monai_xreal.io.atomic import write_text_atomically

        write_text_atomically(args.output, json.dumps(results, indent=2))
        print(f"wrote {args.output}")


def _samplers(args, pipeline, segmenter) -> None:
    from monai_xreal.benchmark import benchmark_conditions
    from monai_xreal.benchmark.samplers import SAMPLER_RECIPES, compare_samplers, format_sampler_table
    from monai_xreal.benchmark.suite import hardware
    from monai_xreal.metrics.judges import load_judges

    unknown = sorted(set(args.recipes or ()) - set(SAMPLER_RECIPES))
    if unknown:
        raise XRealInputError("--recipes", f"unknown recipe(s) {unknown}; choose from {list(SAMPLER_RECIPES)}")
    recipes = {name: SAMPLER_RECIPES[name] for name in args.recipes or SAMPLER_RECIPES}
    lung_judge, _ = load_judges("packaged", None, device=pipeline.device)
    conditions = benchmark_conditions(args.num_images, max(64, pipeline.spatial_shape[0]), args.seed, args.source)
    rows = compare_samplers(pipeline, conditions, segmenter, lung_judge, recipes, batch_size=max(args.batch_sizes),
                            keep_images=args.figure is not None)  # fmt: skip
    print(format_sampler_table(rows))
    if args.figure is not None:
        import torch

        from monai_xreal.benchmark.samplers import placement_figure
        from monai_xreal.visualize import save_rgb

        save_rgb(placement_figure(rows, torch.stack([c.pathology for c in conditions])), args.figure)
        print(f"wrote {args.figure}")
        rows = [{k: v for k, v in r.items() if k not in ("images", "counterfactuals")} for r in rows]
    if args.output is not None:
        from monai_xreal.io.atomic import write_text_atomically

        write_text_atomically(args.output, json.dumps({"hardware": hardware(pipeline.device), "rows": rows}, indent=2))
        print(f"wrote {args.output}")
