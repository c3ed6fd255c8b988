# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Anatomy adherence: Dice between the requested label map and the segmentation bundle's reading of the image."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.metrics import compute_dice
from torch import nn
from tqdm.auto import tqdm

from monai_xreal.bundle import default_bundle_path, load_weights, read_bundle_config
from monai_xreal.metrics.judges import HeartBoxJudge, JudgeScores, RealLungJudge, judge_anatomy

__all__ = [
    "ADHERENCE_LABELS",
    "AdherenceResult",
    "anatomy_dice",
    "dice_summary",
    "load_segmenter",
    "measure_anatomy_adherence",
    "segment",
]  # fmt: skip

ADHERENCE_LABELS = {1: "right lung", 2: "left lung", 3: "heart"}  # the organs the judge reads reliably


def load_segmenter(bundle_root: str | Path | None = None, device: torch.device | str = "cpu") -> nn.Module:
    """The anatomy segmentation bundle's network with its ``models/model.pt`` weights, in eval mode.

    Args:
        bundle_root: the ``cxr_anatomy_segmentation`` bundle; ``None`` is the embedded one.
        device: where it runs.
    """
    root = Path(bundle_root) if bundle_root is not None else default_bundle_path("cxr_anatomy_segmentation")
    network = read_bundle_config(root).get_parsed_content("network_def")
    return load_weights(network, root / "models" / "model.pt").to(device).eval()


@torch.no_grad()
def segment(segmenter: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` label map (argmax) of ``(B, 1, H, W)`` images in [0, 1]."""
    device = next(segmenter.parameters()).device
    return segmenter(images.to(device).float()).argmax(dim=1, keepdim=True).cpu()


def anatomy_dice(predicted: torch.Tensor, requested: torch.Tensor, labels: Sequence[int] = tuple(ADHERENCE_LABELS)):
    """``(B, len(labels))`` Dice per sample and label between two ``(B, 1, H, W)`` label maps (resized to match)."""
    requested = requested.float()
    if requested.shape[2:] != predicted.shape[2:]:
        requested = F.interpolate(requested, size=predicted.shape[2:], mode="nearest-exact")
    one_hot = [torch.cat([(m.round() == label).float() for label in labels], dim=1) for m in (predicted, requested)]
    return compute_dice(one_hot[0], one_hot[1], include_background=True, ignore_empty=False)


@dataclass
class AdherenceResult:
    """Per-sample Dice and the images, for a report and a figure. ``dice`` is the project's segmenter's; ``judges``
    the independent judges' (:class:`~monai_xreal.metrics.judges.JudgeScores`), reported apart from it."""

    labels: dict[int, str]
    dice: torch.Tensor  # (N, len(labels))
    images: list[torch.Tensor] = field(default_factory=list)  # generated (1, H, W) in [0, 1]
    anatomy: list[torch.Tensor] = field(default_factory=list)  # requested (1, H, W)
    pathology: list[torch.Tensor] = field(default_factory=list)  # requested (1, H, W) or empty
    judges: JudgeScores = field(default_factory=JudgeScores)

    def summary(self) -> dict:
        return {**dice_summary(self.dice, self.labels), "independent_judges": self.judges.summary()}


def dice_summary(dice: torch.Tensor, labels: dict[int, str] = ADHERENCE_LABELS) -> dict:
    """Mean, spread and minimum over samples of the per-sample mean Dice, and the mean per label, of ``(N, L)``."""
    per_sample = dice.mean(dim=1)
    return {
        "mean_dice": float(per_sample.mean()),
        "std_dice": float(per_sample.std()) if len(per_sample) > 1 else 0.0,
        "min_dice": float(per_sample.min()),
        "per_label": {name: float(dice[:, i].mean()) for i, name in enumerate(labels.values())},
        "num_samples": len(per_sample),
    }


def measure_anatomy_adherence(
    pipeline,
    segmenter: nn.Module,
    batches: Iterable[dict],
    keep_images: int = 16,
    progress: bool = False,
    lung_judge: RealLungJudge | None = None,
    heart_judge: HeartBoxJudge | None = None,
    **sampling_kwargs,
) -> AdherenceResult:
    """Generate from each batch of conditions and score the anatomy the segmenter reads back (and the independent
    judges, when given).

    Args:
        pipeline: an :class:`monai_xreal.XRealPipeline`.
        segmenter: from :func:`load_segmenter`.
        lung_judge, heart_judge: the independent judges (:mod:`monai_xreal.metrics.judges`), or ``None``.
        batches: dicts with ``anatomy`` ``(B, 1, H, W)``, ``prompt`` (``B`` strings), optional ``pathology`` and
            ``seed`` (``B`` ints).
        keep_images: how many generated images to keep for a figure.
        progress: a progress bar over the batches.
        sampling_kwargs: passed to every pipeline call (``num_inference_steps``, ``guidance_scale``, ``control``).
    """
    scores, judged, result = [], [], AdherenceResult(dict(ADHERENCE_LABELS), torch.empty(0))
    for batch in tqdm(batches, disable=not progress, unit="batch", desc="adherence"):
        anatomy, pathology = torch.as_tensor(batch["anatomy"]).float(), batch.get("pathology")
        prompts = list(batch["prompt"])
        if pathology is not None:
            pathology = torch.as_tensor(pathology).float()
            # a sample without a finding region has nothing to paint: its pathology stage keeps the whole image
            prompts = [p if region.any() else "" for p, region in zip(prompts, pathology)]
        seeds = [int(s) for s in batch["seed"]] if "seed" in batch else None
        images = pipeline(anatomy, pathology, prompts, seed=seeds, **sampling_kwargs)
        scores.append(anatomy_dice(segment(segmenter, images), anatomy))
        judged.append(judge_anatomy(images.cpu(), anatomy, lung_judge, heart_judge))
        grid = images.shape[2:]  # figures show the requested masks on the generated image's grid
        anatomy = F.interpolate(anatomy, size=grid, mode="nearest-exact")
        pathology = torch.zeros_like(anatomy) if pathology is None else F.interpolate(pathology, size=grid)
        for i in range(min(len(images), keep_images - len(result.images))):
            result.images.append(images[i].cpu())
            result.anatomy.append(anatomy[i].cpu())
            result.pathology.append(pathology[i].cpu())
    result.dice = torch.cat(scores) if scores else torch.empty(0, len(ADHERENCE_LABELS))
    result.judges = JudgeScores.concatenate(judged)
    return result
