# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Editing a radiograph inside a region: the request checked, and the image brought to the model grid and back.

An edit runs XReal's pathology stage on a real image instead of the anatomy stage's output (RadEdit's setting: an
edit region, and a keep region that must not change). The model works on its own square grid; the radiograph keeps
its size, so the image is padded to a square (edge values, so no black border reaches the model), resized to the
grid, edited, and only the *change* the model made is brought back to the input's size and added inside the region.
The radiograph's own fine detail (ribs, noise) therefore survives inside the region, and outside it every value is
returned as it came in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from monai.transforms import Transform

from monai_xreal.errors import XRealInputError
from monai_xreal.pipeline.conditions import as_mask_batch, prepare_prompts, to_reader_order
from monai_xreal.transforms import BoxesToMask

__all__ = ["PrepareEdit", "SquareGrid"]


class SquareGrid:
    """Between an image's ``(H, W)`` grid and a model's square grid: pad to a square, then resize.

    Args:
        input_shape: the image's spatial shape ``(H, W)``.
        model_shape: the model's grid ``(h, w)`` (square).
    """

    def __init__(self, input_shape: Sequence[int], model_shape: Sequence[int]) -> None:
        self.input_shape = tuple(int(s) for s in input_shape)
        self.model_shape = tuple(int(s) for s in model_shape)
        side = max(self.input_shape)
        # (left, right) padding of each axis, the last axis first as F.pad wants it
        self.padding = [p for s in reversed(self.input_shape) for p in ((side - s) // 2, side - s - (side - s) // 2)]
        self.side = side

    @property
    def scale(self) -> float:
        """Input pixels per model pixel."""
        return self.side / self.model_shape[0]

    def to_grid(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images to ``(B, C, h, w)``: padded with their edge values, area-averaged down."""
        padded = F.pad(images, self.padding, mode="replicate")
        return F.interpolate(padded, size=self.model_shape, mode="area" if self.side >= self.model_shape[0] else
                             "bilinear")  # fmt: skip

    def mask_to_grid(self, mask: torch.Tensor) -> torch.Tensor:
        """A binary ``(B, 1, H, W)`` mask to the grid: a model pixel is in it when any input pixel it covers is."""
        padded = F.pad((mask > 0).float(), self.padding)
        return (F.adaptive_max_pool2d(padded, self.model_shape) > 0).float()

    def from_grid(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` on the grid back to the input's ``(B, C, H, W)`` (bilinear, padding cropped)."""
        full = F.interpolate(images, size=(self.side, self.side), mode="bilinear", align_corners=False)
        l1, r1, l0, r0 = self.padding
        return full[..., l0 : self.side - r0, l1 : self.side - r1]


class PrepareEdit(Transform):
    """``{"image", "region", "keep", "prompt"}`` as the user gave them to checked tensors at the image's own size.

    - ``image``: ``(H, W)``, ``(1, H, W)`` or ``(B, 1, H, W)`` radiographs in [0, 1] (bone bright, e.g. from
      :func:`~monai_xreal.io.load_cxr`);
    - ``region``: a binary mask of the image's shape (1 = may change), or ``B`` ``(N, 4)`` box arrays in the image's
      pixel grid (MONAI's box convention, see ``BoxesToMask``);
    - ``keep``: an optional mask of the image's shape that must not change even inside ``region`` (RadEdit's keep
      mask, e.g. the other lung or a device);
    - ``prompt``: one text for the batch or ``B`` texts (a finding to add, or ``"No Finding"`` to remove one).

    Returns:
        ``{"image", "region", "prompt"}``: float ``(B, 1, H, W)`` image and region (``region`` minus ``keep``,
        0/1), and ``B`` prompts.

    Raises:
        XRealInputError: a mask whose size is not the image's, an image outside [0, 1], an empty region (after the
            keep region is taken out) or a region covering the whole image (nothing left to hold: that is
            generation, not an edit).
    """

    def __init__(self, device: torch.device | str = "cpu", layout: str = "reader") -> None:
        self.device = torch.device(device)
        self.layout = layout

    def __call__(self, data: Mapping) -> dict:
        image = as_mask_batch(to_reader_order(data.get("image"), self.layout), "image").to(self.device)
        if image.min() < 0 or image.max() > 1:
            raise XRealInputError("image", f"values must lie in [0, 1], got [{image.min():.3g}, {image.max():.3g}]")
        shape = tuple(image.shape[2:])
        region = self._mask(data.get("region"), "region", shape, len(image))
        if data.get("keep") is not None:
            region = region * (1 - self._mask(data["keep"], "keep", shape, len(image)))
        for i in range(len(region)):
            if not region[i].any():
                raise XRealInputError("region", f"is empty for image {i}" + (" once the keep region is taken out"
                                      if data.get("keep") is not None else ""))  # fmt: skip
            if region[i].all():
                raise XRealInputError("region", f"covers the whole of image {i}: nothing would be kept (that is "
                                      "generation, not an edit)")  # fmt: skip
        prompts = prepare_prompts(data.get("prompt", ""), {len(image)})
        return {"image": image, "region": region, "prompt": prompts}

    def _mask(self, mask, argument: str, shape: tuple[int, ...], batch: int) -> torch.Tensor:
        if mask is None:
            raise XRealInputError(argument, "is required")
        if isinstance(mask, (list, tuple)):
            mask = torch.stack([BoxesToMask(shape)(boxes) for boxes in mask])
        mask = as_mask_batch(to_reader_order(mask, self.layout), argument).to(self.device)
        if tuple(mask.shape[2:]) != shape:
            raise XRealInputError(argument, f"shape {tuple(mask.shape[2:])} differs from the image's {shape}")
        if len(mask) not in (1, batch):
            raise XRealInputError(argument, f"{len(mask)} masks for {batch} images")
        return (mask > 0).float().expand(batch, -1, -1, -1)
