# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Making synthetic images people can trust: provenance records and replays, files written whole, and large
sharded, resumable datasets."""

from monai_xreal.synthesis.provenance import bundle_record, make_provenance, read_provenance, reproduce
from monai_xreal.synthesis.sampling import sample_batch
from monai_xreal.synthesis.writer import IMAGE_FORMATS, SyntheticImageWriter

__all__ = [
    "IMAGE_FORMATS",
    "SyntheticImageWriter",
    "bundle_record",
    "make_provenance",
    "read_provenance",
    "reproduce",
    "sample_batch",
]
