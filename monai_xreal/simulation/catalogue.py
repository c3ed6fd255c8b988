# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The simulator's findings, in one light module (the command line lists them without loading torch)."""

SIMULATED_FINDINGS = ("Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Consolidation", "Atelectasis", "Nodule",
                      "Mass")  # fmt: skip
