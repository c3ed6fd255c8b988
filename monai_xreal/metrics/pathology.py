# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Pathology adherence: is the finding painted where it was asked for, and does a classifier see it?"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from monai_xreal.bundle import load_weights, read_bundle_config
from monai_xreal.errors import XRealInputError

__all__ = [
    "LabelClassifier",
    "labels_in_prompt",
    "load_classifier",
    "pathology_placement",
    "prompted_label_auc",
    "requested_label_score",
]

# names the field uses for the same finding; a prompt naming one matches a classifier output named by another
_ALIASES = {"effusion": ("pleural effusion",), "pleural effusion": ("effusion",), "pleural thickening": ()}


@torch.no_grad()
def pathology_placement(
    generated: torch.Tensor, counterfactual: torch.Tensor, requested: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Share of the generated pathology that lies inside the requested region.

    The generated pathology is what naming the finding changed: ``|generated - counterfactual|``, where the
    counterfactual is the same seed, anatomy and pathology mask sampled with the empty prompt. Holding the mask
    fixed keeps what every sample shares (the autoencoder's round trip, the painted region's fresh noise) out of
    the difference, so what remains is the prompt's effect. The score is the share of that change inside the
    mask: 1 is perfect placement, and the mask's share of the image is what a change spread evenly would score.

    Args:
        generated: ``(B, 1, H, W)`` images in [0, 1] sampled with the finding.
        counterfactual: ``(B, 1, H, W)`` the same samples with the empty prompt.
        requested: ``(B, 1, h, w)`` binary pathology masks (resized to the images' grid, nearest).

    Returns:
        ``(inside, area)``: ``(B,)`` share of the change inside the mask, and ``(B,)`` the mask's share of the
        image (the chance level). ``NaN`` where the mask is empty or nothing changed.
    """
    if generated.shape != counterfactual.shape:
        raise ValueError(f"generated {tuple(generated.shape)} and counterfactual {tuple(counterfactual.shape)} differ")
    mask = (F.interpolate(requested.float(), size=generated.shape[2:], mode="nearest-exact") > 0).float()
    change = (generated.float() - counterfactual.float()).abs()
    total = change.sum(dim=(1, 2, 3))
    inside = (change * mask).sum(dim=(1, 2, 3)) / total
    area = mask.mean(dim=(1, 2, 3))
    undefined = (total == 0) | (area == 0)
    return inside.masked_fill(undefined, float("nan")), area.masked_fill(area == 0, float("nan"))


def _normalise(name: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", name.lower()).split())


def labels_in_prompt(prompt: str, labels: Sequence[str]) -> list[int]:
    """Indices of the classifier ``labels`` a prompt names (whole words; case, punctuation and ``_`` ignored; with
    the field's aliases such as "Pleural Effusion" for "Effusion"); "No Finding" prompts name none."""
    text = f" {_normalise(prompt)} "
    found = []
    for index, label in enumerate(labels):
        names = (_normalise(label), *_ALIASES.get(_normalise(label), ()))
        if any(f" {name} " in text for name in names):
            found.append(index)
    return found


class LabelClassifier(nn.Module):
    """A multi-label CXR classifier with named outputs: ``(B, 1, H, W)`` images in [0, 1] to ``(B, L)``
    probabilities.

    Args:
        network: maps ``(B, 1, S, S)`` images to ``(B, L)`` logits (``sigmoid`` is applied here) or, with
            ``outputs_probabilities``, to probabilities.
        labels: the ``L`` output names.
        spatial_size: the network's input side; images are resized to it (area).
        outputs_probabilities: the network already returns probabilities.
    """

    def __init__(
        self, network: nn.Module, labels: Sequence[str], spatial_size: int | None = None,
        outputs_probabilities: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        self.network = network.eval()
        self.labels = list(labels)
        self.spatial_size = spatial_size
        self.outputs_probabilities = outputs_probabilities

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.network.parameters()).device
        images = images.to(device).float()
        if self.spatial_size is not None and images.shape[2:] != (self.spatial_size, self.spatial_size):
            images = F.interpolate(images, size=(self.spatial_size, self.spatial_size), mode="area")
        outputs = self.network(images)
        return (outputs if self.outputs_probabilities else torch.sigmoid(outputs)).float().cpu()


def load_classifier(source: str | Path, device: torch.device | str = "cpu") -> LabelClassifier:
    """A classifier from a MONAI bundle folder (``"embedded"``: the shipped ``cxr_classifier``) or a
    torchxrayvision DenseNet121 weight file.

    A bundle needs ``configs/inference.json`` with ``network_def``, ``models/model.pt``, and its
    ``configs/metadata.json`` naming the outputs in ``network_data_format.outputs.pred.channel_def`` (index to label)
    and the input side in ``network_data_format.inputs.image.spatial_shape``; the network returns logits.
    A file is read as torchxrayvision's ``densenet121-res224-all`` weights (its 18 pathologies).

    Raises:
        XRealInputError: a missing source, or a bundle without the parts above.
    """
    if str(source) == "embedded":
        from monai_xreal.bundle import default_bundle_path

        source = default_bundle_path("cxr_classifier")
    source = Path(source)
    if source.is_dir():
        return _bundle_classifier(source, device)
    if not source.is_file():
        raise XRealInputError("classifier", f"no such bundle folder or weight file: {source}")
    from monai_xreal.metrics.extractors import load_feature_extractor

    densenet = load_feature_extractor("xrv-densenet121-res224-all", source, device=device)
    return LabelClassifier(_XRVProbabilities(densenet), densenet.pathologies, outputs_probabilities=True)


class _XRVProbabilities(nn.Module):
    def __init__(self, densenet: nn.Module) -> None:
        super().__init__()
        self.densenet = densenet

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.densenet.pathology_probabilities(images)


def _bundle_classifier(root: Path, device: torch.device | str) -> LabelClassifier:
    parser = read_bundle_config(root)
    metadata = parser.get("_meta_", {}).get("network_data_format", {})
    channels = metadata.get("outputs", {}).get("pred", {}).get("channel_def")
    if not channels:
        raise XRealInputError("classifier", f"{root} metadata names no outputs (network_data_format.outputs.pred)")
    labels = [channels[key] for key in sorted(channels, key=int)]
    shape = metadata.get("inputs", {}).get("image", {}).get("spatial_shape")
    weights = root / "models" / "model.pt"
    if not weights.is_file():
        raise XRealInputError("classifier", f"missing weight file {weights}")
    try:
        network = load_weights(parser.get_parsed_content("network_def"), weights)
    except XRealInputError as err:
        raise XRealInputError("classifier", str(err)) from err
    return LabelClassifier(network.to(device), labels, int(shape[0]) if shape else None)


def requested_label_score(classifier: LabelClassifier, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    """``(B,)`` the classifier's mean probability over the labels each prompt names; ``NaN`` where it names none
    the classifier knows."""
    probabilities = classifier(images)
    scores = torch.full((len(prompts),), float("nan"))
    for i, prompt in enumerate(prompts):
        named = labels_in_prompt(prompt, classifier.labels)
        if named:
            scores[i] = probabilities[i, named].mean()
    return scores


def prompted_label_auc(probabilities: torch.Tensor, prompts: Sequence[str], labels: Sequence[str]) -> dict:
    """How well a classifier tells generated images apart by the finding their prompt asked for (Diff-CXR's mAUC).

    For each label that some prompts name and others do not: the ROC AUC of the classifier's probability of that
    label, images whose prompt names it being the positives. ``mean_auc`` averages those AUCs (``None`` when no
    label has both positives and negatives).

    Args:
        probabilities: ``(N, L)`` the classifier's probabilities of ``labels`` for ``N`` generated images.
        prompts: the ``N`` prompts the images were generated from.
        labels: the classifier's ``L`` output names.
    """
    from monai.metrics import compute_roc_auc

    named = torch.zeros(len(prompts), len(labels), dtype=torch.bool)
    for i, prompt in enumerate(prompts):
        named[i, labels_in_prompt(prompt, labels)] = True
    per_label = {}
    for j, name in enumerate(labels):
        if named[:, j].any() and not named[:, j].all():
            per_label[name] = float(compute_roc_auc(probabilities[:, j].float(), named[:, j].float()))
    mean = sum(per_label.values()) / len(per_label) if per_label else None
    return {"per_label": per_label, "mean_auc": mean, "num_images": len(prompts)}
