# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""What the bundles' ignite engines need beyond MONAI."""

from monai_xreal.engines.inference import XRealInferer, prepare_conditions_batch
from monai_xreal.engines.checkpoints import latest_checkpoint
