# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``python -m monai_xreal`` is the ``monai-xreal`` command."""

import sys

from monai_xreal.cli.main import main

sys.exit(main())
