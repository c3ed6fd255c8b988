# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal finetune``: adapt a generator bundle (the embedded one, or a converted XReal / Cheff / RoentGen / SD
model) to your own radiographs, written out as a new bundle."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from monai_xreal.cli.options import positive_int, torch_device

HELP = "fine-tune a generator bundle's UNet (all, attention or LoRA) on your radiographs into a new bundle"

_TRAINABLE = ("all", "attention", "lora")  # monai_xreal.engines.TRAINABLE, kept light for --help


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_parser(commands) -> None:
    p = commands.add_parser(
        "finetune", help=HELP,
        description=HELP + ". Runs the bundle's own configs/train_diffusion.json + finetune.json through MONAI's bundle "
        "workflow: it starts from the bundle's UNet and keeps its scale factor, prediction type (epsilon or v) and "
        "image range. Checkpoints go to --work-dir; run the same command again to resume.",
    )  # fmt: skip
    p.add_argument("--bundle", type=Path, default=None, help="the generator bundle (default: the embedded cxr_xreal)")
    p.add_argument("--datalist", type=Path, required=True,
                   help="MONAI datalist whose 'training' items have image and labels ({finding: 0/1})")  # fmt: skip
    p.add_argument("--output-bundle", type=Path, required=True, help="the new bundle (must not exist or be empty)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="checkpoints, logs, previews (default: <output-bundle>.work beside it)")  # fmt: skip
    p.add_argument("--trainable", choices=_TRAINABLE, default="all",
                   help="all UNet parameters, only its attention layers, or LoRA adapters (peft) merged back "
                   "(default: all; the text encoder stays frozen unless --train-text-encoder)")  # fmt: skip
    p.add_argument("--lora-rank", type=positive_int, default=8, help="LoRA rank (default: 8)")
    p.add_argument("--epochs", type=positive_int, default=None, help="epochs (default: the bundle's)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="batch size (default: the bundle's)")
    p.add_argument("--accumulation-steps", type=positive_int, default=1, help="batches per optimiser step (default: 1)")
    p.add_argument("--learning-rate", type=_positive_float, default=None,
                   help="learning rate (default: finetune.json's, 1e-5)")  # fmt: skip
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute the UNet blocks' activations in the backward pass (less memory, more time)")  # fmt: skip
    p.add_argument("--train-text-encoder", action="store_true",
                   help="fine-tune the text encoder with the UNet (a transformers encoder; written into the new bundle)")  # fmt: skip
    p.add_argument("--demographics", action="store_true",
                   help="put the items' demographics (sex, age, race, view) in their training prompts, so that "
                   "generate --sex/--age/--race/--view steer the new bundle")  # fmt: skip
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA)")
    p.add_argument("--device", type=torch_device, default=None, help="torch device (default: the bundle's)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> Path:
    from monai_xreal.adaptation import finetune_bundle
    from monai_xreal.bundle import default_bundle_path

    overrides = {"lora_rank": args.lora_rank, "accumulation_steps": args.accumulation_steps,
                 "gradient_checkpointing": args.gradient_checkpointing,
                 "demographics_in_prompt": args.demographics, "train_text_encoder": args.train_text_encoder}  # fmt: skip
    for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size), ("learning_rate", args.learning_rate)):
        if value is not None:
            overrides[key] = value
    if args.device is not None:
        overrides["device"] = str(args.device)
    if args.bf16:
        overrides.update(amp=True, amp_kwargs={"dtype": "$torch.bfloat16"})
    bundle = args.bundle if args.bundle is not None else default_bundle_path()
    out = finetune_bundle(bundle, args.datalist, args.output_bundle, args.work_dir, args.trainable, overrides)
    record = json.loads((out / "configs" / "metadata.json").read_text())["fine_tuning"]
    print(f"wrote {out} (UNet fine-tuned on {record['num_training']} images, trainable={args.trainable}); "
          f"generate with: monai-xreal generate --bundle {out} ...")  # fmt: skip
    return out
