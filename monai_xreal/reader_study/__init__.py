# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""A blinded reader study ("Spot the fake lungs"): readers label a shuffled mix of real and synthetic CXRs real,
fake or unsure in a web page, each through their own secret link; answers go to SQLite as they are given; the study
definition (images with their SHA-256, truth, orders, seed) is frozen and its SHA-256 names every report;
statistics per reader and between readers behind the owner's key."""

from monai_xreal.reader_study.server import ReaderStudyServer, render_png, study_links
from monai_xreal.reader_study.stats import answers_csv, cohen_kappa, reader_report, report_figure
from monai_xreal.reader_study.store import ANSWERS, StudyStore

__all__ = [
    "ANSWERS",
    "ReaderStudyServer",
    "StudyStore",
    "answers_csv",
    "cohen_kappa",
    "reader_report",
    "render_png",
    "report_figure",
    "study_links",
]
