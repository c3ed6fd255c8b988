# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""XReal's full-size networks with random weights, to time a model of XReal's size where its weights are not at hand.

XReal's release (a 518M-parameter UNet on 64x64x3 latents, 256x256 images, a 582M-parameter text encoder, a 55M
autoencoder and an anatomy controller of the same shape) cannot be downloaded here, and speed does not depend on
what the weights hold. The networks are the ones a conversion of the release builds
(:func:`~monai_xreal.interop.convert.compvis_definitions`: fused attention on), with the noise schedule XReal was
trained on and the embedded ``cxr_xreal`` bundle's sampling defaults (4 + 4 steps: 12 UNet evaluations per
controlled image), so ``monai-xreal benchmark --full-size`` times what a user of a converted XReal gets. Images
from random weights mean nothing: adherence is not measured on them.
"""

from __future__ import annotations

import string
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

__all__ = ["stand_in_vocabulary", "xreal_size_pipeline"]


def stand_in_vocabulary(path: str | Path) -> Path:
    """Write a small WordPiece ``vocab.txt`` (BERT's special tokens, punctuation, lowercase letters and digits, and
    their ``##`` continuations) for the text encoder of random weights, so that timing needs no installed
    bert-base-uncased vocabulary: every lowercased ASCII prompt tokenises without an unknown token."""
    pieces = list(string.ascii_lowercase + string.digits)
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *string.punctuation, *pieces, *(f"##{p}" for p in pieces)]
    path = Path(path)
    path.write_text("\n".join(tokens) + "\n")
    return path


def xreal_size_pipeline(
    device: torch.device | str = "cpu",
    architecture: Mapping[str, Mapping[str, Any]] | None = None,
    spatial_shape: Sequence[int] | None = None,
    seed: int = 0,
):
    """An :class:`~monai_xreal.XRealPipeline` with XReal's networks, random weights and XReal's schedule.

    Args:
        device: where the networks are created and run.
        architecture: arguments replacing XReal's per component (``unet``, ``autoencoder``, ``anatomy_controller``,
            ``text_encoder``; see :data:`~monai_xreal.interop.compvis_arguments.XREAL_ARCHITECTURE`), e.g. a narrow
            model for a test; the anatomy controller has the autoencoder's arguments unless given its own.
        spatial_shape: the image grid (default: XReal's 256x256).
        seed: seed of the random weights.

    Returns:
        The pipeline, on ``device``, with the embedded ``cxr_xreal`` bundle's sampling defaults.
    """
    from monai_xreal import XRealPipeline
    from monai_xreal.bundle import default_bundle_path, read_bundle_config, sampling_defaults
    from monai_xreal.interop.compvis_arguments import XREAL_ARCHITECTURE, XREAL_DEFAULTS
    from monai_xreal.interop.convert import compvis_definitions
    from monai_xreal.interop.schedulers import compvis_scheduler_definition

    device = torch.device(device)
    arguments = {**XREAL_ARCHITECTURE, **(architecture or {})}
    arguments.setdefault("anatomy_controller", arguments["autoencoder"])  # XReal's: an autoencoder of the same shape
    definitions = compvis_definitions(arguments)
    torch.manual_seed(seed)
    # the tokenizer reads its vocabulary when it is built; parameters are created where they run (no host copy)
    with tempfile.TemporaryDirectory() as scratch, torch.device(device):
        vocabulary = stand_in_vocabulary(Path(scratch) / "vocab.txt")
        definitions["text_encoder"] = {**definitions["text_encoder"], "vocab_file": str(vocabulary)}
        parser = ConfigParser(definitions)
        networks = {name: parser.get_parsed_content(name) for name in definitions}
    scheduler = ConfigParser({"s": compvis_scheduler_definition(XREAL_DEFAULTS)}).get_parsed_content("s")
    size = int(XREAL_DEFAULTS["image_size"])
    return XRealPipeline(
        scheduler=scheduler, scale_factor=float(XREAL_DEFAULTS["scale_factor"]),
        spatial_shape=tuple(spatial_shape or (size, size)), device=device,
        sampling_defaults=sampling_defaults(read_bundle_config(default_bundle_path())), **networks,
    )  # fmt: skip
