# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The nearest training images of generated ones and the copy score, calibrated on the training set itself.

Search runs in two stages: every generated image against every training image on 16 x 16 coarse features (shift of
up to one pixel), then the ``candidates`` best against 64 x 64 bands (shifts of up to four pixels); see
:mod:`monai_xreal.memorisation.features`. The **similarity** of two images is that correlation (1: the same image
up to a small shift and a monotonic re-exposure).

The **copy score** puts the similarity to the nearest training image on the training set's own scale::

    score = (similarity - typical) / (1 - typical)

where ``typical`` is the median similarity of a training image to its nearest *other* training image (measured on
up to ``reference_size`` of them). A score of 1 is an identical image, 0 a generated image as close to the training
set as training images are to each other; an image is flagged from :data:`DEFAULT_THRESHOLD` (0.6) up. On phantom
sets (tests/memorisation) genuine samples score at most 0.37, copies that are shifted, re-exposed (gamma 0.6 to 1.6,
contrast) or noised (sigma 0.05) at least 0.76.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from monai_xreal.errors import XRealInputError
from monai_xreal.memorisation.features import (
    MARGIN,
    MAX_SHIFT,
    THUMBNAIL_SIZE,
    band_pass,
    best_shifted_correlation,
    centre_crops,
    coarse_features,
    equalised_thumbnails,
    read_thumbnails,
    shift_of,
    shift_windows,
    shifted_correlation_matrix,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "CopyCheck",
    "CopyDetector",
    "Neighbour",
    "TrainingFeatures",
    "check_images",
    "read_image_paths",
]

DEFAULT_THRESHOLD = 0.6
_MIN_SPREAD = 0.05  # the score's denominator at least: a training set of near-duplicates must not inflate scores


def read_image_paths(datalist: str | Path | Sequence[str | Path], argument: str, key: str = "training") -> list[str]:
    """The image paths of a set: a MONAI datalist (its ``key`` list, or a plain JSON list; paths relative to the file,
    as :func:`monai_xreal.evaluation.read_real_datalist` reads them, which also reads the phantom and simulated sets'
    datalists) or a sequence of image paths.

    Raises:
        XRealInputError: a missing or unreadable datalist, an empty set, or an item without an image file.
    """
    from monai_xreal.evaluation.loading import read_real_datalist

    if isinstance(datalist, (str, Path)):
        try:
            items = read_real_datalist(datalist, key)
        except XRealInputError as err:
            raise XRealInputError(argument, err.message) from err
        paths = [str(item["image"]) for item in items]
        where = f"{datalist} [{key!r}]"
    else:
        paths, where = [str(p) for p in datalist], "the list"
    if not paths:
        raise XRealInputError(argument, "the set is empty")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise XRealInputError(argument, f"{where}: {len(missing)} missing image file(s), e.g. {missing[0]}")
    return paths


@dataclass(frozen=True)
class Neighbour:
    """A training image near a generated one: its path, the similarity (correlation in [-1, 1]), the SSIM of the
    two equalised thumbnails once aligned (in [-1, 1]) and the shift ``(dx, dy)`` in 64-pixel thumbnail pixels."""

    image: str
    similarity: float
    ssim: float
    shift: tuple[int, int]

    def as_dict(self) -> dict:
        return {"image": self.image, "similarity": round(self.similarity, 4), "ssim": round(self.ssim, 4),
                "shift": list(self.shift)}  # fmt: skip


@dataclass(frozen=True)
class CopyCheck:
    """One generated image checked: its copy score, whether it is flagged and its nearest training images (closest
    first)."""

    score: float
    flagged: bool
    neighbours: list[Neighbour] = field(default_factory=list)

    @property
    def nearest(self) -> Neighbour:
        return self.neighbours[0]

    def as_dict(self) -> dict:
        return {"score": round(self.score, 4), "flagged": self.flagged,
                "neighbours": [n.as_dict() for n in self.neighbours]}  # fmt: skip


@dataclass
class TrainingFeatures:
    """What is kept of a training set: per image its path, its ``(64, 64)`` uint8 equalised thumbnail and its
    standardised coarse feature (about 5 KiB an image, whatever the image size).

    Attributes:
        paths: ``M`` image paths.
        thumbnails: ``(M, 1, 64, 64)`` uint8.
        coarse: ``(M, D)`` float32, :func:`~monai_xreal.memorisation.features.centre_crops` of the coarse features.
    """

    paths: list[str]
    thumbnails: torch.Tensor
    coarse: torch.Tensor

    @classmethod
    def from_thumbnails(cls, paths: Sequence[str], thumbnails: torch.Tensor) -> TrainingFeatures:
        """From ``(M, 1, 64, 64)`` uint8 equalised thumbnails."""
        return cls(list(paths), thumbnails, centre_crops(coarse_features(band_pass(thumbnails)), coarse=True))

    @classmethod
    def read(
        cls, datalist: str | Path | Sequence[str | Path], key: str = "training", batch_size: int = 32,
        progress: bool = False, channels: list[int] | None = None,
    ) -> TrainingFeatures:  # fmt: skip
        """The features of a training set (a datalist or image paths, :func:`read_image_paths`), read in batches.

        Raises:
            XRealInputError: a bad datalist or image, fewer than two images, or images of several channel counts.
        """
        paths = read_image_paths(datalist, "training", key)
        if len(paths) < 2:
            raise XRealInputError("training", "needs two images at least (the copy score is calibrated on the "
                                  "training images' distances to each other)")  # fmt: skip
        thumbnails = []
        with tqdm(total=len(paths), unit="image", desc="training features", disable=not progress) as bar:
            for batch in read_thumbnails(paths, "training", batch_size, channels):
                thumbnails.append(batch.thumbnails)
                bar.update(len(batch.paths))
        return cls.from_thumbnails(paths, torch.cat(thumbnails))

    def __len__(self) -> int:
        return len(self.paths)

    def to(self, device: torch.device | str) -> TrainingFeatures:
        return TrainingFeatures(self.paths, self.thumbnails.to(device), self.coarse.to(device))


class CopyDetector:
    """Scores generated images against a training set (see the module's docstring for the method).

    Args:
        training: the training set's features.
        threshold: the copy score from which an image is flagged.
        neighbours: nearest training images reported per generated image.
        candidates: training images the coarse search keeps for the fine comparison.
        reference_size: training images whose nearest other training image calibrates the score (spread evenly
            over the set).
        device: where the comparisons run.
    """

    def __init__(
        self,
        training: TrainingFeatures,
        threshold: float = DEFAULT_THRESHOLD,
        neighbours: int = 3,
        candidates: int = 16,
        reference_size: int = 512,
        device: torch.device | str = "cpu",
    ) -> None:
        if len(training) < 2:
            raise XRealInputError("training", "needs two images at least")
        if neighbours < 1 or candidates < 1 or reference_size < 1:
            raise XRealInputError("neighbours", "neighbours, candidates and reference_size must be positive")
        self.device = torch.device(device)
        self.training = training.to(self.device)
        self.threshold = float(threshold)
        self.neighbours = min(int(neighbours), len(training))
        self.candidates = min(max(int(candidates), self.neighbours), len(training))
        self.reference = self._reference(min(int(reference_size), len(training)))
        self.typical = float(self.reference.median())

    @classmethod
    def from_datalist(cls, datalist: str | Path | Sequence[str | Path], key: str = "training", batch_size: int = 32,
                      progress: bool = False, **detector_args) -> CopyDetector:  # fmt: skip
        """A detector for a training datalist (or image paths); ``detector_args`` as for the constructor."""
        return cls(TrainingFeatures.read(datalist, key, batch_size, progress), **detector_args)

    def score(self, similarity: torch.Tensor) -> torch.Tensor:
        """Similarities to the nearest training image -> copy scores (1: identical, 0: as close as training images
        typically are to each other)."""
        return (similarity - self.typical) / max(1.0 - self.typical, _MIN_SPREAD)

    @property
    def reference_scores(self) -> torch.Tensor:
        """``(R,)`` the copy scores of the reference training images against the other training images: what the
        score looks like for images that are not copies (unless the training set holds duplicates)."""
        return self.score(self.reference)

    def settings(self) -> dict:
        """The method and its calibration, as recorded in reports and manifests."""
        return {
            "features": f"{THUMBNAIL_SIZE}x{THUMBNAIL_SIZE} equalised thumbnails, band-passed (DoG sigma 1-4 px)",
            "similarity": "largest correlation over shifts of up to 4 thumbnail pixels",
            "score": "(similarity - typical) / max(1 - typical, 0.05); typical: median training nearest-neighbour "
            "similarity",
            "threshold": self.threshold,
            "typical_similarity": round(self.typical, 4),
            "training_images": len(self.training),
            "reference_images": len(self.reference),
        }

    @torch.no_grad()
    def check(self, images: torch.Tensor) -> list[CopyCheck]:
        """``(B, 1, X, Y)`` generated images (any size; [0, 1] or any monotonic scale) -> one check each."""
        return self.check_thumbnails(equalised_thumbnails(images))

    @torch.no_grad()
    def check_thumbnails(self, thumbnails: torch.Tensor) -> list[CopyCheck]:
        """``(B, 1, 64, 64)`` uint8 equalised thumbnails -> one check each."""
        similarity, index, shift, ssim = self._nearest(thumbnails.to(self.device), self.neighbours)
        scores = self.score(similarity[:, 0])
        checks = []
        for b in range(len(thumbnails)):
            near = [Neighbour(self.training.paths[int(index[b, k])], float(similarity[b, k]), float(ssim[b, k]),
                              (int(shift[b, k, 0]), int(shift[b, k, 1])))
                    for k in range(index.shape[1])]  # fmt: skip
            checks.append(CopyCheck(float(scores[b]), bool(scores[b] >= self.threshold), near))
        return checks

    def _nearest(self, thumbnails: torch.Tensor, count: int, exclude: torch.Tensor | None = None):
        """The ``count`` nearest training images of each thumbnail: similarities, indices, shifts ``(B, count, 2)``
        and aligned SSIMs, all closest first; ``exclude`` ``(B,)``: a training index each query must not match."""
        band = band_pass(thumbnails)
        coarse = shifted_correlation_matrix(shift_windows(coarse_features(band), coarse=True), self.training.coarse)
        if exclude is not None:
            coarse[torch.arange(len(thumbnails)), exclude] = -float("inf")
        k = min(self.candidates, len(self.training) - (exclude is not None))
        candidates = coarse.topk(k, dim=1).indices  # (B, K)
        fine = centre_crops(band_pass(self.training.thumbnails[candidates.flatten()])).view(len(band), k, -1)
        similarity, window = best_shifted_correlation(shift_windows(band), fine)
        similarity, order = similarity.topk(min(count, k), dim=1)
        index = candidates.gather(1, order)
        shift = shift_of(window.gather(1, order))
        return similarity.cpu(), index.cpu(), shift.cpu(), self._ssim(thumbnails, index, shift).cpu()

    def _ssim(self, thumbnails: torch.Tensor, index: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` SSIM of each query's equalised thumbnail, shifted as matched, with each neighbour's."""
        from monai.metrics import SSIMMetric

        b, k = index.shape
        n, m = THUMBNAIL_SIZE, MARGIN + MAX_SHIFT
        queries = thumbnails.float().div(255)[:, None].expand(b, k, 1, n, n).reshape(b * k, 1, n, n)
        references = self.training.thumbnails[index.flatten().to(self.device)].float().div(255)
        dx, dy = shift.flatten(0, 1).T.tolist()
        aligned = torch.stack([q[:, m + x : n - m + x, m + y : n - m + y] for q, x, y in zip(queries, dx, dy)])
        metric = SSIMMetric(spatial_dims=2, data_range=1.0, win_size=7)
        return metric(aligned, references[..., m : n - m, m : n - m]).view(b, k)

    def _reference(self, size: int) -> torch.Tensor:
        """``(size,)`` similarities of evenly spread training images to their nearest other training image."""
        picked = torch.linspace(0, len(self.training) - 1, size).round().long().unique()
        values = []
        for start in range(0, len(picked), 64):
            chosen = picked[start : start + 64].to(self.device)
            similarity, *_ = self._nearest(self.training.thumbnails[chosen], 1, exclude=chosen)
            values.append(similarity[:, 0])
        return torch.cat(values)


def check_images(detector: CopyDetector, paths: Sequence[str], batch_size: int = 32, progress: bool = False,
                 channels: list[int] | None = None) -> Mapping[str, CopyCheck]:  # fmt: skip
    """Every image of ``paths`` checked, read in batches: ``{path: check}`` in order."""
    found: dict[str, CopyCheck] = {}
    with tqdm(total=len(paths), unit="image", desc="checking for copies", disable=not progress) as bar:
        for batch in read_thumbnails(paths, "generated", batch_size, channels):
            found.update(zip(batch.paths, detector.check_thumbnails(batch.thumbnails)))
            bar.update(len(batch.paths))
    return found
