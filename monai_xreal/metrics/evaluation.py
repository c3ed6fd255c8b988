# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Evaluate a generator on real data and conditions: realism (FID), diversity, anatomy and pathology adherence."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from monai_xreal.errors import XRealInputError
from monai_xreal.io import load_cxr, load_mask
from monai_xreal.io.atomic import atomic_path
from monai_xreal.metrics.adherence import anatomy_dice, segment
from monai_xreal.metrics.diversity import intra_condition_ms_ssim, ms_ssim_weights
from monai_xreal.metrics.fid import extract_features, frechet_distance
from monai_xreal.metrics.groups import anatomy_summary, judge_summary, measures_by_group
from monai_xreal.metrics.judges import HeartBoxJudge, RealLungJudge, judge_anatomy
from monai_xreal.metrics.pathology import (
    LabelClassifier,
    pathology_placement,
    prompted_label_auc,
    requested_label_score,
)
from monai_xreal.seeding import replica_seed
from monai_xreal.text.demographics import Demographics, condition_prompt

__all__ = ["EvaluationResult", "GenerationEvaluation", "Sample", "load_real_images", "sample_seed"]

sample_seed = replica_seed  # the seed scheme lives in monai_xreal.seeding


@dataclass
class Sample:
    """One generated image and what it was asked to follow."""

    condition: int  # index into the conditions
    replica: int
    seed: int
    prompt: str
    image: torch.Tensor | None = None  # (1, H, W) in [0, 1]
    counterfactual: torch.Tensor | None = None  # (1, H, W): same seed and masks, empty prompt
    scores: dict = field(default_factory=dict)  # per-sample measures: "dice" (L,), "lungs" (3,), "heart", "inside"


@dataclass
class EvaluationResult:
    """The report (JSON-ready) and the samples behind it (for the figure)."""

    report: dict
    samples: list[Sample] = field(default_factory=list)
    conditions: list[dict] = field(default_factory=list)  # with loaded "anatomy" / "pathology" (1, H, W) tensors

    def save(self, report_path: str | Path, figure_path: str | Path | None = None) -> list[Path]:
        """Write the report JSON and (optionally) the PNG figure, both or neither; returns the files written."""
        from PIL import Image

        from monai_xreal.metrics.figures import evaluation_figure

        targets = [Path(report_path)] + ([Path(figure_path)] if figure_path is not None else [])
        if len({t.resolve() for t in targets}) != len(targets):
            raise XRealInputError("figure", "the figure and the report need different paths")
        text = json.dumps(self.report, indent=2, allow_nan=False, default=_jsonable)
        figure = evaluation_figure(self) if figure_path is not None else None  # before any file is touched
        try:  # both are written before either is renamed into place: a failure writing one leaves neither
            with contextlib.ExitStack() as stack:
                staged = [stack.enter_context(atomic_path(target)) for target in targets]
                staged[0].write_text(text)
                if figure is not None:
                    Image.fromarray(figure).save(staged[1], format="PNG")
        except OSError as err:
            raise XRealInputError("output", f"cannot write {err.filename}: {err.strerror}") from err
        return targets


def _jsonable(value):
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def load_real_images(items: Sequence[Mapping], size: Sequence[int], key: str = "image") -> torch.Tensor:
    """``(N, 1, *size)`` real CXRs in [0, 1] from datalist items, resized (area) to the generated images' grid so
    that FID compares content, not resolution."""
    images = []
    for item in tqdm(items, desc="real images", unit="img"):
        if key not in item:
            raise XRealInputError("real", f"a datalist item has no {key!r}: {dict(item)}")
        image = load_cxr(item[key]).as_tensor()[None].float()
        images.append(F.interpolate(image, size=tuple(size), mode="area") if image.shape[2:] != tuple(size) else image)
    return torch.cat(images)


class GenerationEvaluation:
    """Generate ``num_samples`` images (``samples_per_condition`` per condition) and measure them.

    Metrics (each computed when its ingredients are given):

    - ``fid``: one value per feature extractor, real images against all generated images.
    - ``diversity``: mean intra-condition MS-SSIM over all pairs of a condition's samples (lower is more diverse).
    - ``anatomy``: Dice per structure between the requested label map and ``segmenter``'s reading of the image.
    - ``pathology``: share of the generated pathology inside the requested mask (against the same seed and masks
      with the empty prompt, see :func:`~monai_xreal.metrics.pathology.pathology_placement`), and ``classifier``'s
      probability for the labels the prompt names, with the prompt and with the empty prompt.
    - ``classifier_auc``: per label, the ROC AUC of ``classifier``'s probability between the images whose prompt
      names the label and the others, and their mean (Diff-CXR's mAUC; see
      :func:`~monai_xreal.metrics.pathology.prompted_label_auc`).

    Args:
        pipeline: an :class:`monai_xreal.XRealPipeline`.
        conditions: condition dicts (:func:`monai_xreal.data.load_conditions`): ``id``, ``prompt``, ``seed`` and
            optional ``anatomy`` / ``pathology`` file paths or ``(1, H, W)`` tensors. Used in order, cycled when
            ``num_samples`` needs more.
        real_images: ``(N, 1, H, W)`` real images in [0, 1] (:func:`load_real_images`); needed for FID only.
        num_samples: generated images in all.
        samples_per_condition: ``K`` samples of each condition (different seeds); 4 gives the field's 6 pairs.
        extractors: ``{name: feature extractor}`` for FID (:mod:`monai_xreal.metrics.extractors`).
        segmenter: the anatomy judge (:func:`monai_xreal.metrics.load_segmenter`).
        classifier: a :class:`~monai_xreal.metrics.pathology.LabelClassifier`.
        lung_judge, heart_judge: the independent anatomy judges (:mod:`monai_xreal.metrics.judges`): their Dice is
            reported as ``independent_judges``, apart from ``segmenter``'s.
        batch_size: images per pipeline call.
        pathology_counterfactuals: sample each pathology condition again with the empty prompt, for placement
            (doubles the sampling of those conditions).
        sampling: keyword arguments of every pipeline call (``num_inference_steps``, ``control``, ...).
        progress: progress bars.
    """

    def __init__(
        self,
        pipeline,
        conditions: Sequence[Mapping],
        real_images: torch.Tensor | None = None,
        num_samples: int = 64,
        samples_per_condition: int = 4,
        extractors: Mapping[str, nn.Module] | None = None,
        segmenter: nn.Module | None = None,
        classifier: LabelClassifier | None = None,
        lung_judge: RealLungJudge | None = None,
        heart_judge: HeartBoxJudge | None = None,
        batch_size: int = 8,
        pathology_counterfactuals: bool = True,
        sampling: Mapping | None = None,
        progress: bool = True,
    ) -> None:
        if num_samples < 1 or samples_per_condition < 1 or batch_size < 1:
            raise XRealInputError("num_samples", "sample counts and batch size must be positive integers")
        if not conditions:
            raise XRealInputError("conditions", "no conditions to generate from")
        if extractors and (real_images is None or len(real_images) < 2):
            raise XRealInputError("real", "FID needs at least two real images")
        if extractors and num_samples < 2:
            raise XRealInputError("num_samples", "FID needs at least two generated images")
        self.pipeline = pipeline
        self.sampling = dict(sampling or {})
        self.conditions = [self._load_condition(c) for c in conditions]
        self.real_images = real_images
        self.num_samples = int(num_samples)
        self.samples_per_condition = int(samples_per_condition)
        self.extractors = dict(extractors or {})
        self.segmenter = segmenter
        self.classifier = classifier
        self.lung_judge, self.heart_judge = lung_judge, heart_judge
        self.batch_size = int(batch_size)
        self.pathology_counterfactuals = pathology_counterfactuals
        self.progress = progress

    def _load_condition(self, condition: Mapping) -> dict:
        demographics = Demographics.from_mapping(condition.get("demographics"), f"conditions[{condition.get('id')}]")
        loaded = {"id": str(condition.get("id", "")), "seed": int(condition.get("seed", 0)),
                  "prompt": condition_prompt(condition)}  # fmt: skip
        if demographics is not None:
            loaded["demographics"] = demographics.as_dict()
        for key in ("anatomy", "pathology"):
            value = condition.get(key)
            if value is not None:
                mask = value if isinstance(value, torch.Tensor) else load_mask(value, key)
                mask = torch.as_tensor(mask).float()
                mask = mask if mask.ndim == 3 else mask[None]
                # an empty finding region is no finding: sample the prompt on the anatomy stage instead
                loaded[key] = None if key == "pathology" and not mask.any() else mask
        # every condition is checked by the pipeline's own rules now, before any sampling
        batch = [None if loaded.get(k) is None else loaded[k][None] for k in ("anatomy", "pathology")]
        try:
            self.pipeline.prepare_conditions(*batch, loaded["prompt"], self.sampling.get("control", "xreal"))
        except XRealInputError as err:
            raise XRealInputError(f"conditions[{loaded['id']}]", str(err)) from err
        return loaded

    # -- the run, top to bottom ----------------------------------------------------------------------------------

    def run(self) -> EvaluationResult:
        """Generate, then measure; returns the report and the samples."""
        samples = self._plan()
        self._generate(samples)
        generated = torch.stack([s.image for s in samples])
        report = {"settings": self._settings(), "metrics": {}}
        metrics = report["metrics"]
        if self.extractors:
            metrics["fid"] = self._fid(generated)
        if self.samples_per_condition > 1:
            metrics["diversity"] = self._diversity(samples)
        if self.segmenter is not None:
            metrics["anatomy"] = self._anatomy(samples)
        if self.lung_judge is not None or self.heart_judge is not None:
            metrics["independent_judges"] = self._judges(samples)
        if self.classifier is not None:  # every image, so that each prompted label has negatives too
            probabilities = self.classifier(generated)
            metrics["classifier_auc"] = prompted_label_auc(probabilities, [s.prompt for s in samples],
                                                           self.classifier.labels)  # fmt: skip
        with_finding = [s for s in samples if self.conditions[s.condition].get("pathology") is not None]
        if with_finding and (self.pathology_counterfactuals or self.classifier is not None):
            metrics["pathology"] = self._pathology(with_finding)
        by_group = measures_by_group(samples, [c.get("demographics") for c in self.conditions])
        if by_group:
            metrics["by_group"] = by_group
        return EvaluationResult(report, samples, self.conditions)

    def _plan(self) -> list[Sample]:
        samples = []
        for index in range(self.num_samples):
            group, replica_in_group = divmod(index, self.samples_per_condition)
            cycle, condition = divmod(group, len(self.conditions))
            replica = cycle * self.samples_per_condition + replica_in_group
            seed = sample_seed(self.conditions[condition]["seed"], replica)
            samples.append(Sample(condition, replica, seed, self.conditions[condition]["prompt"]))
        return samples

    def _generate(self, samples: list[Sample]) -> None:
        # a pipeline call takes conditions of one kind (with or without anatomy, a finding region); keep kinds apart
        kinds: dict[tuple[bool, bool], list[Sample]] = {}
        for sample in samples:
            condition = self.conditions[sample.condition]
            kind = (condition.get("anatomy") is not None, condition.get("pathology") is not None)
            kinds.setdefault(kind, []).append(sample)
        size = self.batch_size
        batches = [group[i : i + size] for group in kinds.values() for i in range(0, len(group), size)]
        for batch in tqdm(batches, desc="generating", unit="batch", disable=not self.progress):
            conditions = [self.conditions[s.condition] for s in batch]
            anatomy = _stack([c.get("anatomy") for c in conditions], "anatomy")
            pathology = _stack([c.get("pathology") for c in conditions], "pathology")
            seeds = [s.seed for s in batch]
            images = self.pipeline(anatomy, pathology, [s.prompt for s in batch], seed=seeds, **self.sampling).cpu()
            counterfactuals = None
            if pathology is not None and self.pathology_counterfactuals:
                # the counterfactual keeps the demographics: only the finding's own effect is measured
                empty = [condition_prompt({"demographics": c.get("demographics")}) for c in conditions]
                counterfactuals = self.pipeline(anatomy, pathology, empty, seed=seeds, **self.sampling).cpu()
            for i, sample in enumerate(batch):
                sample.image = images[i]
                sample.counterfactual = None if counterfactuals is None else counterfactuals[i]

    def _settings(self) -> dict:
        return {
            "num_samples": self.num_samples,
            "samples_per_condition": self.samples_per_condition,
            "num_conditions": len(self.conditions),
            "num_real": 0 if self.real_images is None else len(self.real_images),
            "image_size": list(self.pipeline.spatial_shape),
            "sampling": {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in self.sampling.items()},
            "sampling_defaults": dict(self.pipeline.sampling_defaults),
        }

    def _fid(self, generated: torch.Tensor) -> dict:
        values = {}
        for name, extractor in self.extractors.items():
            real = extract_features(extractor, self.real_images, self.batch_size)
            fake = extract_features(extractor, generated, self.batch_size)
            values[name] = {
                "fid": frechet_distance(real, fake), "feature_dim": int(real.shape[1]), "num_real": len(real),
                "num_generated": len(fake), "fewer_samples_than_dimensions": min(len(real), len(fake)) <= real.shape[1],
            }  # fmt: skip
        return values

    def _diversity(self, samples: list[Sample]) -> dict:
        by_condition: dict[int, list[torch.Tensor]] = {}
        for sample in samples:
            by_condition.setdefault(sample.condition, []).append(sample.image)
        groups = [torch.stack(images) for images in by_condition.values() if len(images) > 1]
        if not groups:
            return {"num_conditions": 0}
        scores = [intra_condition_ms_ssim(group) for group in groups]
        return {
            "ms_ssim": float(np.mean(scores)), "std": float(np.std(scores)), "num_conditions": len(scores),
            # conditions reused when num_samples asks for more than K per condition pool all their samples
            "samples_per_condition": sorted({len(group) for group in groups}),
            "scale_weights": list(ms_ssim_weights(min(samples[0].image.shape[1:]))),
        }  # fmt: skip

    def _anatomy_batches(self, samples: list[Sample]):
        """``(samples, images, requested anatomy)`` batches of the samples that asked for an anatomy."""
        scored = [s for s in samples if self.conditions[s.condition].get("anatomy") is not None]
        for i in range(0, len(scored), self.batch_size):
            batch = scored[i : i + self.batch_size]
            images = torch.stack([s.image for s in batch])
            yield batch, images, _stack([self.conditions[s.condition]["anatomy"] for s in batch], "anatomy",
                                        images.shape[2:])  # fmt: skip

    def _anatomy(self, samples: list[Sample]) -> dict:
        for batch, images, requested in self._anatomy_batches(samples):
            for sample, dice in zip(batch, anatomy_dice(segment(self.segmenter, images), requested)):
                sample.scores["dice"] = dice
        return anatomy_summary(samples)

    def _judges(self, samples: list[Sample]) -> dict:
        for batch, images, requested in self._anatomy_batches(samples):
            scores = judge_anatomy(images, requested, self.lung_judge, self.heart_judge)
            for i, sample in enumerate(batch):
                for key in ("lungs", "heart"):
                    if getattr(scores, key) is not None:
                        sample.scores[key] = getattr(scores, key)[i]
        return judge_summary(samples)

    def _pathology(self, samples: list[Sample]) -> dict:
        result: dict = {"num_samples": len(samples)}
        images = torch.stack([s.image for s in samples])
        if self.pathology_counterfactuals:
            counterfactuals = torch.stack([s.counterfactual for s in samples])
            requested = _stack([self.conditions[s.condition]["pathology"] for s in samples], "pathology")
            inside, area = pathology_placement(images, counterfactuals, requested)
            result["placement"] = {"inside_fraction": _nanmean(inside), "mask_area_fraction": _nanmean(area)}
            for sample, value in zip(samples, inside):
                sample.scores["inside"] = float(value)
        if self.classifier is not None:
            prompts = [s.prompt for s in samples]
            scores = requested_label_score(self.classifier, images, prompts)
            result["classifier"] = {"requested_label_probability": _nanmean(scores),
                                    "num_scored": int((~scores.isnan()).sum())}  # fmt: skip
            if self.pathology_counterfactuals:
                baseline = requested_label_score(self.classifier, counterfactuals, prompts)
                result["classifier"]["empty_prompt_probability"] = _nanmean(baseline)
        return result


def _nanmean(values: torch.Tensor) -> float | None:
    kept = values[~values.isnan()]
    return float(kept.mean()) if len(kept) else None


def _stack(masks: Sequence[torch.Tensor | None], name: str, size: Sequence[int] | None = None) -> torch.Tensor | None:
    """``(B, 1, H, W)`` from ``(1, H, W)`` masks (all given or all ``None``), resized (nearest) to ``size`` or to the
    first mask's grid."""
    if all(m is None for m in masks):
        return None
    if any(m is None for m in masks):
        raise ValueError(f"a batch mixes samples with and without {name}")
    size = tuple(size) if size is not None else tuple(masks[0].shape[1:])
    resized = [m[None] if tuple(m.shape[1:]) == size else F.interpolate(m[None], size=size, mode="nearest-exact")
               for m in masks]  # fmt: skip
    return torch.cat(resized)
