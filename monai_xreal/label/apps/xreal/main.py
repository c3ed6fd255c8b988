# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""MONAI Label app entry point: ``monailabel start_server --app <this folder> --studies DIR``.

MONAI Label loads this file and serves the ``MONAILabelApp`` subclass it finds; the app lives in
:mod:`monai_xreal.label.app`.
"""

from monai_xreal.label.app import XRealLabelApp

__all__ = ["XRealLabelApp"]
