# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The ``monai-xreal`` command line: one module per subcommand, each a thin layer over the library."""
