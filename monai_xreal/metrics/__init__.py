# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Measuring generated CXRs: realism (FID), diversity, and how closely they follow the requested conditions."""

from monai_xreal.metrics.adherence import (
    ADHERENCE_LABELS,
    AdherenceResult,
    anatomy_dice,
    load_segmenter,
    measure_anatomy_adherence,
    segment,
)
from monai_xreal.metrics.box_segmenter import prepare_box_inputs, segment_with_box
from monai_xreal.metrics.diversity import MS_SSIM_WEIGHTS, intra_condition_ms_ssim, ms_ssim_weights
from monai_xreal.metrics.evaluation import EvaluationResult, GenerationEvaluation, load_real_images, sample_seed
from monai_xreal.metrics.fid import extract_features, frechet_distance, kernel_distance
from monai_xreal.metrics.judges import (
    HeartBoxJudge,
    JudgeScores,
    RealLungJudge,
    judge_anatomy,
    load_judges,
    read_anatomy,
)
from monai_xreal.metrics.pathology import (
    LabelClassifier,
    labels_in_prompt,
    load_classifier,
    pathology_placement,
    prompted_label_auc,
    requested_label_score,
)

__all__ = [
    "ADHERENCE_LABELS",
    "MS_SSIM_WEIGHTS",
    "AdherenceResult",
    "EvaluationResult",
    "GenerationEvaluation",
    "HeartBoxJudge",
    "JudgeScores",
    "LabelClassifier",
    "RealLungJudge",
    "anatomy_dice",
    "extract_features",
    "frechet_distance",
    "kernel_distance",
    "intra_condition_ms_ssim",
    "judge_anatomy",
    "labels_in_prompt",
    "load_classifier",
    "load_judges",
    "load_real_images",
    "load_segmenter",
    "measure_anatomy_adherence",
    "ms_ssim_weights",
    "pathology_placement",
    "prepare_box_inputs",
    "prompted_label_auc",
    "read_anatomy",
    "requested_label_score",
    "sample_seed",
    "segment",
    "segment_with_box",
]
