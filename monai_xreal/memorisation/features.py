# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Copy-detection features: small equalised, band-passed thumbnails compared by correlation over small shifts.

An image ``(1, X, Y)`` in [0, 1] becomes:

* its **thumbnail**: area-resized to 64 x 64 and histogram-equalised (each pixel replaced by its mid-rank / 4096),
  so any monotonic re-exposure (gamma, window, contrast, brightness) gives the same thumbnail; kept as uint8
  (4 KiB an image);
* its **band**: the thumbnail band-passed (Gaussian blur sigma 1 minus sigma 4 px: the ribs, vessels, edges and
  devices that tell one radiograph from another, without the chest shape every radiograph shares and without pixel
  noise);
* its **coarse** feature: the band area-pooled to 16 x 16, for a fast first search.

Two images are compared by the largest Pearson correlation of the query's band, shifted by up to ``MAX_SHIFT``
thumbnail pixels (about 6 % of the side), with the reference's central crop (a ``MARGIN`` pixel border is left
out, where the blur sees past the edge). Correlation also cancels the remaining linear intensity differences.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from monai_xreal.errors import XRealInputError

__all__ = [
    "COARSE_SIZE",
    "MARGIN",
    "MAX_SHIFT",
    "THUMBNAIL_SIZE",
    "ImageThumbnails",
    "band_pass",
    "best_shifted_correlation",
    "centre_crops",
    "coarse_features",
    "equalised_thumbnails",
    "read_thumbnails",
    "shift_of",
    "shift_windows",
    "shifted_correlation_matrix",
]

THUMBNAIL_SIZE = 64
COARSE_SIZE = 16
MAX_SHIFT = 4  # thumbnail pixels, each way
MARGIN = 4  # thumbnail pixels left out at every edge of the reference
_COARSE_SHIFT = MAX_SHIFT * COARSE_SIZE // THUMBNAIL_SIZE
_COARSE_MARGIN = max(1, MARGIN * COARSE_SIZE // THUMBNAIL_SIZE)
_BAND_SIGMAS = (1.0, 4.0)


def equalised_thumbnails(images: torch.Tensor) -> torch.Tensor:
    """``(B, 1, X, Y)`` images (any range) -> ``(B, 1, 64, 64)`` uint8 equalised thumbnails.

    Area resizing averages pixel noise away; equalising (mid-ranks, so ties stay ties) makes the thumbnail the same
    for any monotonic intensity change.

    Raises:
        XRealInputError: not a batch of single-channel 2D images.
    """
    if images.ndim != 4 or images.shape[1] != 1:
        raise XRealInputError("images", f"expected (B, 1, X, Y) grey-scale images, got shape {tuple(images.shape)}")
    images = images.float()
    if tuple(images.shape[2:]) != (THUMBNAIL_SIZE, THUMBNAIL_SIZE):
        images = F.interpolate(images, size=(THUMBNAIL_SIZE, THUMBNAIL_SIZE), mode="area")
    flat = images.flatten(1)
    ordered = flat.sort(dim=1).values
    ranks = torch.searchsorted(ordered, flat, right=False) + torch.searchsorted(ordered, flat, right=True)
    equalised = ranks.float() / (2 * flat.shape[1])  # mid-rank in [0, 1]
    return (equalised * 255 + 0.5).clamp(0, 255).to(torch.uint8).view(-1, 1, THUMBNAIL_SIZE, THUMBNAIL_SIZE)


@functools.lru_cache(maxsize=8)
def _blur_matrix(n: int, sigma: float) -> torch.Tensor:
    """``(n, n)``: a Gaussian blur of a length-``n`` signal with replicated edges, as a matrix."""
    radius = int(3 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1)
    weights = torch.exp(-(offsets.double() ** 2) / (2 * sigma**2))
    weights = weights / weights.sum()
    matrix = torch.zeros(n, n, dtype=torch.float64)
    rows = torch.arange(n)[:, None].expand(n, len(offsets))
    matrix.index_put_((rows, (rows + offsets).clamp(0, n - 1)), weights.expand(n, -1).clone(), accumulate=True)
    return matrix.float()


def band_pass(thumbnails: torch.Tensor) -> torch.Tensor:
    """``(B, 1, n, n)`` uint8 (or float in [0, 1]) thumbnails -> their ``(B, 1, n, n)`` float32 band: the difference of
    Gaussian blurs of sigma 1 and 4 px (edges replicated), as matrix products."""
    x = thumbnails.float() / (255.0 if thumbnails.dtype == torch.uint8 else 1.0)
    fine, wide = (_blur_matrix(x.shape[-1], sigma).to(x.device) for sigma in _BAND_SIGMAS)
    return fine @ x @ fine.T - wide @ x @ wide.T


def coarse_features(band: torch.Tensor) -> torch.Tensor:
    """``(B, 1, 64, 64)`` band -> ``(B, 1, 16, 16)`` area-pooled (a 4-pixel shift at 64 is one pixel here)."""
    return F.adaptive_avg_pool2d(band, COARSE_SIZE)


def _standardise(x: torch.Tensor, dim: int) -> torch.Tensor:
    x = x - x.mean(dim, keepdim=True)
    return x / x.norm(dim=dim, keepdim=True).clamp_min(1e-6)


def centre_crops(x: torch.Tensor, coarse: bool = False) -> torch.Tensor:
    """``(B, 1, n, n)`` -> ``(B, D)`` standardised central crops (the part a reference is compared on); ``D`` is
    ``(n - 2 (margin + shift))**2``."""
    m = (_COARSE_MARGIN + _COARSE_SHIFT) if coarse else (MARGIN + MAX_SHIFT)
    n = x.shape[-1]
    return _standardise(x[..., m : n - m, m : n - m].flatten(1), 1)


def shift_windows(x: torch.Tensor, coarse: bool = False) -> torch.Tensor:
    """``(B, 1, n, n)`` -> ``(B, D, S)`` standardised windows of the central crop's size at each of the
    ``S = (2 shift + 1)**2`` shifts (row-major from ``(-shift, -shift)``), inside the margin."""
    m, s = (_COARSE_MARGIN, _COARSE_SHIFT) if coarse else (MARGIN, MAX_SHIFT)
    n = x.shape[-1]
    windows = F.unfold(x[..., m : n - m, m : n - m], n - 2 * (m + s))
    return _standardise(windows, 1)


def shift_of(index: torch.Tensor) -> torch.Tensor:
    """Window indices ``(...)`` of :func:`shift_windows` (64-pixel thumbnails) -> ``(..., 2)`` shifts ``(dx, dy)`` in
    thumbnail pixels: the query's content at ``p + shift`` matches the reference's at ``p``."""
    side = 2 * MAX_SHIFT + 1
    return torch.stack([index // side - MAX_SHIFT, index % side - MAX_SHIFT], dim=-1)


def shifted_correlation_matrix(
    query_windows: torch.Tensor, references: torch.Tensor, chunk: int = 4096
) -> torch.Tensor:
    """``(N, M)`` largest correlation over shifts between every query and every reference.

    Args:
        query_windows: ``(N, D, S)`` from :func:`shift_windows`.
        references: ``(M, D)`` from :func:`centre_crops`.
        chunk: references compared at once (bounds the ``(N, chunk, S)`` intermediate).
    """
    parts = [
        torch.einsum("nds,md->nms", query_windows, references[i : i + chunk]).amax(-1)
        for i in range(0, len(references), chunk)
    ]
    return torch.cat(parts, dim=1)


def best_shifted_correlation(
    query_windows: torch.Tensor, candidates: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query against its own candidates: ``(N, K)`` largest correlations and ``(N, K)`` the window index of
    each maximum.

    Args:
        query_windows: ``(N, D, S)`` from :func:`shift_windows`.
        candidates: ``(N, K, D)`` from :func:`centre_crops`.
    """
    values, index = torch.einsum("nds,nkd->nks", query_windows, candidates).max(-1)
    return values, index


@dataclass(frozen=True)
class ImageThumbnails:
    """A batch of images read from files: their ``(B, 1, 64, 64)`` uint8 equalised thumbnails and their paths."""

    paths: list[str]
    thumbnails: torch.Tensor


def _channels(image) -> int:
    """How many channels the file had before it was read as grey (1 for grey-scale, 3 for RGB...)."""
    meta = getattr(image, "meta", {}) or {}
    mode = meta.get("mode")
    if isinstance(mode, str):
        from PIL import Image

        try:
            return int(Image.getmodebands(mode))
        except (KeyError, ValueError):
            return 1
    dim = meta.get("original_channel_dim")
    if dim is None or dim == "no_channel" or (isinstance(dim, float) and math.isnan(dim)):
        return 1
    return -1  # several channels, their count unknown


def read_thumbnails(
    paths: Sequence[str], argument: str, batch_size: int = 32, channels: list[int] | None = None
) -> Iterator[ImageThumbnails]:
    """The images of ``paths`` read one at a time (:func:`monai_xreal.io.load_cxr`) and yielded as thumbnails in
    batches of ``batch_size``: memory holds one image and one batch of thumbnails.

    Args:
        paths: image files.
        argument: named in errors (``"generated"``, ``"training"``).
        channels: a one-item list holding the channel count every image must have (1: grey-scale); the first image
            read sets it when the list is empty, so two sets read with the same list must agree.

    Raises:
        XRealInputError: a missing or unreadable image, or one with another channel count than the others.
    """
    from monai_xreal.io import load_cxr

    channels = [] if channels is None else channels
    for start in range(0, len(paths), batch_size):
        batch = list(paths[start : start + batch_size])
        thumbnails = []
        for path in batch:
            try:
                image = load_cxr(path)
            except XRealInputError as err:
                raise XRealInputError(argument, f"{path}: {err.message}") from err
            found = _channels(image)
            if not channels:
                channels.append(found)
            elif found != channels[0]:
                raise XRealInputError(
                    argument, f"{path} has {_describe(found)} but the images before it have {_describe(channels[0])}; "
                    "compare images of one kind (convert them all to grey-scale)",
                )  # fmt: skip
            thumbnails.append(equalised_thumbnails(image.as_tensor()[None]))
        yield ImageThumbnails(batch, torch.cat(thumbnails))


def _describe(channels: int) -> str:
    return "1 channel (grey-scale)" if channels == 1 else f"{channels} channels" if channels > 1 else "several channels"
