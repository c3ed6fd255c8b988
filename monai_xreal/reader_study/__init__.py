# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""A blinded reader study ("Spot the fake lungs"): readers label a shuffled mix of real and synthetic CXRs real,
fake or unsure in a web page; answers go to SQLite as they are given; statistics per reader and between readers."""

from monai_xreal.reader_study.server import ReaderStudyServer, render_png
from monai_xreal.reader_study.stats import cohen_kappa, reader_report, report_figure
from monai_xreal.reader_study.store import ANSWERS, StudyStore

__all__ = ["ANSWERS", "ReaderStudyServer", "StudyStore", "cohen_kappa", "reader_report", "render_png", "report_figure"]
