# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The package version, in a leaf module any tier may import (``setup.cfg`` reads it from here)."""

__version__ = "0.9.1"
