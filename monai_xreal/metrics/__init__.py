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
from monai_xreal.metrics.diversity import MS_SSIM_WEIGHTS, intra_condition_ms_ssim, ms_ssim_weights
from monai_xreal.metrics.evaluation import EvaluationResult, GenerationEvaluation, load_real_images, sample_seed
from monai_xreal.metrics.fid import extract_features, frechet_distance
from monai_xreal.metrics.pathology import (
    LabelClassifier,
    labels_in_prompt,
    load_classifier,
    pathology_placement,
    prompted_label_auc,
    requested_label_score,
)
from monai_xreal.metrics.box_segmenter import prepare_box_inputs, segment_with_box
from monai_xreal.metrics.judges import (
    HeartBoxJudge,
    JudgeScores,
    RealLungJudge,
    judge_anatomy,
    load_judges,
    read_anatomy,
)
