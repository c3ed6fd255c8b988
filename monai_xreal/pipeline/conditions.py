# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Condition preparation: the user's anatomy map, pathology region and prompts, checked and brought to the model grid.

Axis order: the pipeline works in MONAI's reader order, what ``LoadImage`` returns (for a PNG, axis 0 is the
image's x, its columns). ``PIL.Image`` inputs are brought to that order here; numpy arrays and tensors are taken
in reader order unless ``layout="rows"`` says they are row-major ``(rows, columns)`` like ``np.asarray(PIL image)``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Transform

from monai_xreal.errors import XRealInputError, XRealInputWarning
from monai_xreal.transforms import BoxesToMask, ValidateLabelMap

__all__ = [
    "FINDING_WORDS",
    "LAYOUTS",
    "PrepareConditions",
    "XRealInputWarning",
    "as_mask_batch",
    "prepare_prompts",
    "to_reader_order",
]

LAYOUTS = ("reader", "rows")

# words that name a finding or normal anatomy in CheXpert / NIH / VinDr labels and report sentences: a prompt with
# none of them is probably not what the text encoder was trained on (warned, not refused)
FINDING_WORDS = frozenset(
    "no finding normal clear unremarkable atelectasis cardiomegaly consolidation edema enlarged cardiomediastinum "
    "cardiomediastinal fracture lesion opacity opacities opacification effusion effusions pleural pneumonia "
    "pneumothorax device devices support tube line nodule nodules mass masses infiltration infiltrate emphysema "
    "fibrosis hernia thickening calcification cardiac heart lung lungs silhouette congestion collapse "
    "aortic enlargement ild granuloma scarring bronchiectasis".split()
)


def to_reader_order(mask, layout: str = "reader"):
    """A mask in MONAI's reader order: ``PIL.Image`` and ``layout="rows"`` arrays are transposed (last two axes)."""
    if layout not in LAYOUTS:
        raise XRealInputError("layout", f"must be one of {LAYOUTS}, got {layout!r}")
    if type(mask).__module__.startswith("PIL."):
        return torch.as_tensor(np.asarray(mask).copy()).transpose(-2, -1)
    if layout == "rows" and mask is not None and not isinstance(mask, (list, tuple)):
        return torch.as_tensor(np.array(mask) if not isinstance(mask, torch.Tensor) else mask).transpose(-2, -1)
    return mask


def as_mask_batch(mask, argument: str) -> torch.Tensor:
    """``(H, W)``, ``(1, H, W)`` or ``(B, 1, H, W)`` to a float ``(B, 1, H, W)`` tensor, else an error."""
    mask = torch.as_tensor(mask.as_tensor() if hasattr(mask, "as_tensor") else mask)
    if mask.ndim == 2:
        mask = mask[None, None]
    elif mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[None]
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise XRealInputError(
            argument, f"expected a 2D mask (H, W), (1, H, W) or (B, 1, H, W); got {tuple(mask.shape)}"
        )
    if mask.numel() == 0:
        raise XRealInputError(argument, f"the mask is empty: shape {tuple(mask.shape)}")
    if mask.is_floating_point() and not torch.isfinite(mask).all():
        raise XRealInputError(argument, "contains NaN or infinite values")
    return mask.float()


class PrepareConditions(Transform):
    """``{"anatomy", "pathology", "prompt"}`` as the user gave them to model-grid tensors and ``B`` prompts.

    - ``anatomy``: ``(H, W)``, ``(1, H, W)`` or ``(B, 1, H, W)`` label map in ``labels`` (or ``None``); resized to
      ``spatial_shape`` with nearest neighbour;
    - ``pathology``: a mask of the anatomy map's shape (1 = paint the finding here), or ``B`` ``(N, 4)`` box arrays
      in the anatomy map's pixel grid (or ``None``);
    - ``prompt``: one text for the batch or ``B`` texts.

    With ``require_region`` (XReal's pathology stage), a sample with a prompt needs a non-empty pathology region:
    its pathology stage would otherwise paint nowhere. Warns (:class:`XRealInputWarning`) for an all-background
    anatomy map, a map that is not square (it is stretched to the model grid) and a prompt without a finding word.

    Args:
        spatial_shape: the model's image grid ``(H, W)``.
        labels: the label values the anatomy map may hold.
        device: where the returned tensors live.
        require_region: refuse a prompt whose pathology mask is empty.
        layout: the axis order of array inputs, ``"reader"`` or ``"rows"`` (see the module docstring).

    Returns:
        ``{"anatomy", "pathology", "prompt", "input_shape"}``: float ``(B, 1, H, W)`` tensors at ``spatial_shape``
        (or ``None``), ``B`` prompts and the anatomy map's own spatial shape (``None`` without one).

    Raises:
        XRealInputError: naming the argument at fault.
    """

    def __init__(
        self,
        spatial_shape: Sequence[int],
        labels: Sequence[int],
        device: torch.device | str = "cpu",
        require_region: bool = True,
        layout: str = "reader",
    ) -> None:
        self.spatial_shape = tuple(int(s) for s in spatial_shape)
        self.labels = sorted(int(v) for v in labels)
        self.device = torch.device(device)
        self.require_region = require_region
        self.layout = layout

    def __call__(self, data: Mapping) -> dict:
        anatomy = to_reader_order(data.get("anatomy"), self.layout)
        pathology = to_reader_order(data.get("pathology"), self.layout)
        input_shape = None
        if anatomy is not None:
            anatomy = as_mask_batch(anatomy, "anatomy").to(self.device)
            ValidateLabelMap(self.labels, "anatomy")(anatomy)
            input_shape = tuple(anatomy.shape[2:])
            self._warn_about_anatomy(anatomy)
            anatomy = F.interpolate(anatomy, size=self.spatial_shape, mode="nearest-exact")
        if isinstance(pathology, (list, tuple)):
            pathology = torch.stack([BoxesToMask(input_shape or self.spatial_shape)(boxes) for boxes in pathology])
        if pathology is not None:
            pathology = as_mask_batch(pathology, "pathology").to(self.device)
            if input_shape is not None and tuple(pathology.shape[2:]) != input_shape:
                raise XRealInputError("pathology", f"shape {tuple(pathology.shape[2:])} differs from the anatomy "
                                      f"map's {input_shape}")  # fmt: skip
            pathology = F.interpolate((pathology > 0).float(), size=self.spatial_shape, mode="nearest-exact")
        prompts = prepare_prompts(data.get("prompt", ""), {m.shape[0] for m in (anatomy, pathology) if m is not None})
        if pathology is not None and self.require_region:
            empty_with_prompt = [i for i, p in enumerate(prompts) if p.strip() and not pathology[i].any()]
            if empty_with_prompt:
                raise XRealInputError(
                    "pathology", f"mask is empty for sample(s) {empty_with_prompt} that have a pathology prompt"
                )
        return {"anatomy": anatomy, "pathology": pathology, "prompt": prompts, "input_shape": input_shape}

    def _warn_about_anatomy(self, anatomy: torch.Tensor) -> None:
        empty = [i for i in range(anatomy.shape[0]) if not anatomy[i].any()]
        if empty:
            warnings.warn(XRealInputWarning(f"anatomy: sample(s) {empty} are all background; no organ will be "
                                            "placed"), stacklevel=3)  # fmt: skip
        height, width = anatomy.shape[2:]
        target = self.spatial_shape
        if height * target[1] != width * target[0]:
            warnings.warn(XRealInputWarning(f"anatomy: a {height}x{width} map is stretched to the model's "
                                            f"{target[0]}x{target[1]} grid; crop or pad it to keep its proportions"),
                          stacklevel=3)  # fmt: skip


def prepare_prompts(prompt: str | Sequence[str], sizes: set[int]) -> list[str]:
    """One prompt per sample from one text or a list, checked against the batch sizes ``sizes`` of the other
    inputs; warns (:class:`XRealInputWarning`) for a prompt that names no finding the model knows."""
    prompts = [prompt] * (max(sizes) if sizes else 1) if isinstance(prompt, str) else [str(p) for p in prompt]
    for text in set(prompts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:  # e.g. a lone surrogate from a JSON "\ud800" escape
            raise XRealInputError("prompt", f"not valid Unicode text: {err.reason} at {err.start}") from None
        words = set(re.findall(r"[a-z]+", text.lower()))
        if text.strip() and not words & FINDING_WORDS:
            warnings.warn(XRealInputWarning(f"prompt: {text[:40]!r} names no finding the model knows "
                                            "(e.g. 'Cardiomegaly', 'Pleural Effusion', 'No Finding')"), stacklevel=3)  # fmt: skip
    if len(sizes | {len(prompts)}) > 1:
        raise XRealInputError(
            "prompt", f"batch sizes disagree: anatomy, pathology and prompts give {sorted(sizes | {len(prompts)})}"
        )
    return prompts
