# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``run_utility_study``: a utility study run, its report written as JSON and drawn as a figure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from monai_xreal.io.atomic import write_text_atomically
from monai_xreal.utility.figure import save_utility_figure
from monai_xreal.utility.study import UtilityStudy

__all__ = ["run_utility_study"]


def run_utility_study(
    real: str | Path,
    synthetic: str | Path,
    test: str | Path,
    output: str | Path,
    *,
    figure: str | Path | None = None,
    work_dir: str | Path | None = None,
    progress: bool = False,
    **options: Any,
) -> dict:
    """Run a utility study and write its report (JSON) and figure (PNG).

    The classifier bundle is trained under each protocol (real only, real + synthetic at each ratio, synthetic only,
    synthetic pre-training then real fine-tuning) with each seed, tested on ``test``; the report gives each
    protocol's per-label and mean AUC with bootstrap confidence intervals over the seeds and the test images, and its
    paired difference from the real-only protocol (``delta_vs_real``).

    Args:
        real, synthetic, test: the datalists (see :class:`UtilityStudy`).
        output: the report JSON to write.
        figure: the figure PNG (default: ``output`` with ``.png``).
        work_dir: the runs' folder (default: ``<output stem>_runs`` beside ``output``); rerunning with it skips
            the finished runs.
        progress: a progress bar over the epochs.
        options: :class:`UtilityStudy`'s keyword options (``protocols``, ``ratios``, ``epochs``, ``seeds``,
            ``bundle``, ``labels``, ``overrides``, ``device``...).

    Returns:
        the report: ``settings``, ``test`` (size, each label's positives and negatives), ``protocols`` (per protocol:
        ``num_training``, ``per_label`` and ``mean_auc`` as ``{"mean", "low", "high", "per_seed", ...}``,
        ``delta_vs_real``), ``runs`` (each run's folder, whether this call trained it, its time) and
        ``environment``.
    """
    output = Path(output)
    figure = Path(figure) if figure is not None else output.with_suffix(".png")
    work_dir = Path(work_dir) if work_dir is not None else output.with_name(f"{output.stem}_runs")
    study = UtilityStudy(real, synthetic, test, work_dir, **options)
    report = study.run(progress=progress)
    if study.rank == 0:
        write_text_atomically(output, json.dumps(report, indent=2) + "\n")
        save_utility_figure(report, figure)
    return report
