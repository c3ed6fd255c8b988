# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Phantom CXRs grounded in real anatomy: real lung shapes, real finding positions, a radiograph-like image."""

from monai_xreal.data.phantoms.anatomy import ANATOMY_LABELS, Anatomy, build_anatomy
from monai_xreal.data.phantoms.findings import PHANTOM_FINDINGS, BoxPrior, Finding, load_box_prior
from monai_xreal.data.phantoms.generator import MAX_SIZE, MIN_SIZE, Phantom, PhantomGenerator
from monai_xreal.data.phantoms.lungs import LungShapes, load_lung_shapes
from monai_xreal.data.phantoms.dataset import PHANTOM_FOLDERS, PhantomDataset, phantom_item, write_phantom_set
