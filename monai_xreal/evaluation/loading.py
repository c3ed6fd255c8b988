# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""An evaluation assembled from files: the bundle, the datalists and the judges' weights (CLI and bundle config)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from monai_xreal.errors import XRealInputError
from monai_xreal.metrics.evaluation import GenerationEvaluation, load_real_images

__all__ = ["build_evaluation", "read_real_datalist"]


def read_real_datalist(path: str | Path, key: str = "validation") -> list[dict]:
    """Items of a MONAI datalist (``{key: [{"image": ...}, ...]}``, paths relative to the file) or of a plain JSON
    list of such items.

    Raises:
        XRealInputError: a missing or unreadable file, or no such list in it.
    """
    from monai.data import load_decathlon_datalist

    from monai_xreal.data.conditions import read_json

    path = Path(path)
    content = read_json(path, "real")
    if isinstance(content, list):
        content, key = {"items": content}, "items"
    if not isinstance(content, dict) or not isinstance(content.get(key), list) or not content[key]:
        lists = [k for k, v in content.items() if isinstance(v, list)] if isinstance(content, dict) else []
        raise XRealInputError("real", f"{path} has no non-empty list {key!r} (lists in it: {lists})")
    if not all(isinstance(item, dict) and "image" in item for item in content[key]):
        raise XRealInputError("real", f"every item of {path}[{key!r}] needs an 'image'")
    return load_decathlon_datalist(str(path), is_segmentation=False, data_list_key=key, base_dir=str(path.parent))


def build_evaluation(
    conditions: str | Path,
    bundle: str | Path | None = None,
    real: str | Path | None = None,
    real_key: str = "validation",
    fid: Mapping[str, str | Path] | None = None,
    segmenter: str | Path | None = "embedded",
    classifier: str | Path | None = None,
    lung_judge: str | Path | None = None,
    heart_judge: str | Path | None = None,
    device: str | torch.device | None = None,
    pipeline=None,
    **evaluation_args,
) -> GenerationEvaluation:
    """A :class:`GenerationEvaluation` from files.

    Args:
        conditions: a conditions datalist (:func:`monai_xreal.data.load_conditions`).
        bundle: the generator bundle; ``None`` is the embedded ``cxr_xreal``. Not read when ``pipeline`` is given.
        real: a datalist of real images (:func:`read_real_datalist`); needed with ``fid``.
        real_key: the list to read from it.
        fid: ``{extractor name: local weight file}`` (:func:`monai_xreal.metrics.extractors.load_feature_extractor`).
        segmenter: the anatomy judge's bundle; ``"embedded"`` is ``cxr_anatomy_segmentation``, ``None`` skips Dice.
        classifier: a classifier bundle or torchxrayvision weight file (:func:`load_classifier`), or ``None``.
        lung_judge, heart_judge: the independent judges: ``"packaged"`` (cheXwhatsApp's lung U-Net, LiteMedSAM, from
            their installed packages), a converted bundle or weight file, or ``None`` to leave one out.
        device: torch device; ``None`` is the bundle's (or the given pipeline's).
        pipeline: an :class:`~monai_xreal.pipeline.XRealPipeline` already built with its weights (the bundle
            runner's ``@pipeline`` when ``evaluate.json`` is layered on ``common.json`` and ``inference.json``).
        evaluation_args: :class:`GenerationEvaluation` arguments (``num_samples``, ``samples_per_condition``,
            ``batch_size``, ``sampling``, ...).
    """
    from monai_xreal.data import load_conditions
    from monai_xreal.metrics.adherence import load_segmenter
    from monai_xreal.metrics.extractors import load_feature_extractor
    from monai_xreal.metrics.judges import load_judges
    from monai_xreal.metrics.pathology import load_classifier
    from monai_xreal.pipeline import XRealPipeline

    if fid and real is None:
        raise XRealInputError("real", "FID needs a datalist of real images")
    if pipeline is None:
        pipeline = XRealPipeline.from_bundle(bundle, device=device)
    elif device is not None:
        pipeline.to(device)
    # extractors, judges and data first: a bad path fails before any sampling
    extractors = {
        name: load_feature_extractor(name, path, device=pipeline.device) for name, path in (fid or {}).items()
    }
    judge = None
    if segmenter is not None:
        judge = load_segmenter(None if segmenter == "embedded" else segmenter, device=pipeline.device)
    scorer = None if classifier is None else load_classifier(classifier, device=pipeline.device)
    lungs, heart = load_judges(lung_judge, heart_judge, device=pipeline.device)
    condition_list = load_conditions(conditions)
    real_images = None
    if real is not None:
        real_images = load_real_images(read_real_datalist(real, real_key), pipeline.spatial_shape)
    return GenerationEvaluation(
        pipeline, condition_list, real_images, extractors=extractors, segmenter=judge, classifier=scorer,
        lung_judge=lungs, heart_judge=heart, **evaluation_args,
    )  # fmt: skip
