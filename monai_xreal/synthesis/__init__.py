# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Making synthetic images people can trust: one generation service (seeds, streamed batches, provenance, files
written whole, resume), provenance records and replays, and large sharded, resumable datasets."""

from monai_xreal.synthesis.handlers import SyntheticImageSaver
from monai_xreal.synthesis.provenance import bundle_record, make_provenance, read_provenance, reproduce
from monai_xreal.synthesis.service import Condition, Generated, GenerationService, Sample
from monai_xreal.synthesis.writer import IMAGE_FORMATS, SyntheticImageWriter

__all__ = [
    "IMAGE_FORMATS",
    "Condition",
    "GenerationService",
    "Generated",
    "Sample",
    "SyntheticImageSaver",
    "SyntheticImageWriter",
    "bundle_record",
    "make_provenance",
    "read_provenance",
    "reproduce",
]
