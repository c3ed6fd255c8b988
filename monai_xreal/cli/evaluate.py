# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal evaluate``: FID, diversity, anatomy and pathology adherence of a generator, as JSON and a figure."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from monai_xreal.cli.options import add_judge_options, check_output_file, make_parent, torch_device
from monai_xreal.errors import XRealInputError

HELP = "evaluate a generator bundle: FID, intra-condition MS-SSIM, anatomy Dice and pathology placement"


def _fid_spec(text: str) -> tuple[str, Path]:
    from monai_xreal.metrics.extractors import FEATURE_EXTRACTORS

    name, sep, path = text.partition("=")
    if not sep or name not in FEATURE_EXTRACTORS or not path:
        names = ", ".join(FEATURE_EXTRACTORS)
        raise argparse.ArgumentTypeError(f"expected NAME=WEIGHTS with NAME one of {names}; got {text!r}")
    return name, Path(path)


def add_parser(commands) -> None:
    p = commands.add_parser(
        "evaluate", help=HELP,
        description=HELP + ". Conditions are used in order (cycled), K samples each; the real images feed FID.",
    )  # fmt: skip
    p.add_argument("--conditions", type=Path, required=True, help="conditions datalist (JSON, as for generate)")
    p.add_argument("--real", type=Path, default=None, help="MONAI datalist of real images (needed with --fid)")
    p.add_argument("--real-key", default="validation", help="the datalist's list to read (default: validation)")
    p.add_argument("--output", type=Path, required=True, help="report JSON to write")
    p.add_argument("--figure", type=Path, default=None, help="PNG figure (default: the report's path with .png)")
    p.add_argument("--bundle", type=Path, default=None, help="generator bundle (default: the embedded cxr_xreal)")
    p.add_argument("--num-images", type=int, default=64, help="generated images in all (default: 64)")
    p.add_argument("--samples-per-condition", type=int, default=4, help="K samples per condition (default: 4)")
    p.add_argument(
        "--fid", type=_fid_spec, action="append", default=[], metavar="NAME=WEIGHTS",
        help="an FID feature extractor and its local weight file; repeatable. NAME: inception-pytorch-fid, "
        "inception-torch-fidelity, xrv-densenet121-res224-all",
    )  # fmt: skip
    p.add_argument("--segmenter", type=Path, default=None, help="anatomy judge bundle (default: the embedded one)")
    p.add_argument("--no-anatomy", action="store_true", help="skip anatomy Dice (the segmenter's and the judges')")
    add_judge_options(p)
    p.add_argument(
        "--classifier",
        type=Path,
        default=None,
        help="classifier bundle, 'embedded' (the shipped cxr_classifier), or a torchxrayvision weight file",
    )
    p.add_argument("--no-placement", action="store_true", help="skip pathology placement (saves the extra sampling)")
    p.add_argument(
        "--num-inference-steps", type=int, default=None, help="sampling steps per stage (default: the bundle's)"
    )
    p.add_argument("--guidance-scale", type=float, default=None, help="guidance weight (default: the bundle's)")
    p.add_argument("--control", choices=("xreal", "controlnet"), default="xreal", help="control mode (default: xreal)")
    p.add_argument("--batch-size", type=int, default=8, help="images per pipeline call (default: 8)")
    p.add_argument("--device", type=torch_device, default=None, help="torch device (default: the bundle's)")
    p.set_defaults(run=run)


def run(args) -> None:
    from monai_xreal.evaluation import build_evaluation

    for name in ("num_images", "samples_per_condition", "batch_size"):
        if getattr(args, name) < 1:
            raise XRealInputError(f"--{name.replace('_', '-')}", "must be a positive integer")
    if args.num_inference_steps is not None and args.num_inference_steps < 1:
        raise XRealInputError("--num-inference-steps", "must be a positive integer")
    check_output_file(args.output, "--output", ".json")
    figure = check_output_file(args.figure if args.figure is not None else args.output.with_suffix(".png"),
                               "--figure", ".png")  # fmt: skip
    names = [name for name, _ in args.fid]
    if len(set(names)) != len(names):
        raise XRealInputError("--fid", "an extractor is named twice")
    sampling = {"control": args.control}
    sampling.update({k: v for k, v in (("num_inference_steps", args.num_inference_steps), ("guidance_scale", args.guidance_scale))
                     if v is not None})  # fmt: skip
    evaluation = build_evaluation(
        args.conditions, bundle=args.bundle, real=args.real, real_key=args.real_key, fid=dict(args.fid),
        segmenter=None if args.no_anatomy else (args.segmenter or "embedded"), classifier=args.classifier,
        lung_judge=None if args.no_anatomy else args.lung_judge,
        heart_judge=None if args.no_anatomy else args.heart_judge,
        device=args.device, num_samples=args.num_images, samples_per_condition=args.samples_per_condition,
        batch_size=args.batch_size, pathology_counterfactuals=not args.no_placement, sampling=sampling,
    )  # fmt: skip
    result = evaluation.run()
    written = result.save(make_parent(args.output), make_parent(figure))
    print(json.dumps(result.report["metrics"], indent=2))
    print("wrote " + ", ".join(map(str, written)))
