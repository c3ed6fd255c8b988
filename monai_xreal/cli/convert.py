# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal convert``: published CXR diffusion weights into a MONAI bundle that XReal's controllers drive."""

from __future__ import annotations

import argparse
from pathlib import Path

from monai_xreal.errors import XRealInputError

HELP = (
    "convert XReal / Cheff (CompVis), diffusers or MONAI model-zoo weights into a monai_xreal bundle, or "
    "cheXwhatsApp's real-CXR lung segmenter into the lung-judge bundle"
)
_STEPS = ("read and convert", "weights", "configs", "checksums")


def add_parser(commands) -> None:
    from monai_xreal.interop.formats import FORMATS

    p = commands.add_parser("convert", help=HELP, description=HELP + ".")
    p.add_argument("--from", dest="source_format", choices=(*FORMATS, "chexwhatsapp"), required=True,
                   help="the input's format")  # fmt: skip
    p.add_argument(
        "--input", type=Path, default=None,
        help="compvis: a backbone .pth/.ckpt/.safetensors, or XReal's folder (backbone.pth, anatomy_controller.pth); "
        "diffusers: the model folder; model-zoo: the bundle folder; chexwhatsapp: lung_segmentation.pt (default: the "
        "installed cheXwhatsApp package's)",
    )  # fmt: skip
    p.add_argument("--output-bundle", type=Path, required=True, help="new bundle folder (must not exist or be empty)")
    p.add_argument("--safetensors", action="store_true", help="also write models/*.safetensors copies")
    p.add_argument(
        "--original-config", type=Path, default=None,
        help="compvis: the model's original YAML (heads, image size, schedule); default: XReal's published values",
    )  # fmt: skip
    p.add_argument("--ema", action="store_true", help="compvis: use the UNet's EMA weights (model_ema.*)")
    p.add_argument(
        "--text-encoder", type=Path, default=None,
        help="model-zoo: a local Stable Diffusion 2.1-base folder with text_encoder/ and tokenizer/",
    )  # fmt: skip
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> Path:
    from tqdm.auto import tqdm

    from monai_xreal.interop.bundle_writer import write_bundle
    from monai_xreal.interop.convert import convert

    out = args.output_bundle
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise XRealInputError("output_bundle", f"{out} exists and is not empty")
    if args.source_format == "chexwhatsapp":
        from monai_xreal.interop.chexwhatsapp import write_lung_judge_bundle

        bundle = write_lung_judge_bundle(out, args.input, safetensors=True)
        print(f"wrote {bundle} (the real lung judge: cheXwhatsApp's U-Net, read safely); checksums in "
              "configs/metadata.json")  # fmt: skip
        return bundle
    if args.input is None:
        raise XRealInputError("input", f"--from {args.source_format} needs --input")
    with tqdm(total=len(_STEPS), unit="step", desc="convert") as bar:
        bar.set_postfix_str(_STEPS[0])
        conversion = convert(
            args.source_format, args.input, original_config=args.original_config, ema=args.ema,
            text_encoder=args.text_encoder,
        )  # fmt: skip

        def advance(step: str) -> None:
            bar.update(1)
            bar.set_postfix_str(step)

        bundle = write_bundle(conversion, args.output_bundle, safetensors=args.safetensors, progress=advance)
        bar.update(1)
    print(f"wrote {bundle} ({', '.join(sorted(conversion.networks))}); checksums in configs/metadata.json")
    return bundle
