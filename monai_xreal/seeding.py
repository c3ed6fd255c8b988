# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The seed scheme: which seed each image gets, and the per-sample random streams drawn from it.

Every image is drawn from its own ``torch.Generator`` seeded with its seed, so an image does not depend on the
other images of its batch (up to the last bits of batched kernels). Seeds come from these rules, all here:

- :func:`batch_seeds`: a call's ``seed`` (``None``: fresh seeds; an int ``s``: ``s, s + 1, ...``; a list: as given),
  used by the pipeline, ``generate`` (image ``i`` of a run gets ``--seed + i``) and the Label task;
- :func:`draw_seed`: a fresh seed, recorded so the image can be made again;
- :func:`dataset_seed`: sample ``k`` of a dataset condition, a hash that does not depend on how the work is split;
- :func:`replica_seed`: replica ``r`` of an evaluation condition;
- :func:`next_seed`: the seed a sample is made again with (``generate-dataset --exclude-copies-of``).

It sits below the pipeline (it needs no model), so the metrics and the workflows read the same rules.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence

from monai_xreal.errors import XRealInputError

__all__ = ["MAX_SEED", "batch_seeds", "dataset_seed", "draw_seed", "generators", "next_seed", "replica_seed"]

MAX_SEED = 2**63 - 1


def draw_seed() -> int:
    """A fresh seed in ``[0, 2**31)`` (short enough to type back)."""
    return secrets.randbelow(2**31)


def batch_seeds(seed: int | Sequence[int] | None, batch: int) -> list[int]:
    """One seed per sample of a batch of ``batch``: see the module docstring."""
    if seed is None:
        seeds = [secrets.randbelow(2**62) for _ in range(batch)]
    elif isinstance(seed, int):
        seeds = [seed + i for i in range(batch)]
    else:
        seeds = [int(s) for s in seed]
        if len(seeds) != batch:
            raise XRealInputError("seed", f"{len(seeds)} seeds given for a batch of {batch}")
    if any(not 0 <= s <= MAX_SEED for s in seeds):
        raise XRealInputError("seed", f"seeds must be in [0, {MAX_SEED}], got {seeds}")
    return seeds


def dataset_seed(seed: int, condition_id: str, condition_seed: int, sample_index: int) -> int:
    """The seed of sample ``sample_index`` of a dataset condition: a hash of the run seed, the condition's id and
    seed, and the index (so it does not depend on the number of processes, restarts or batch order)."""
    key = json.dumps(["monai_xreal.sample", seed, condition_id, condition_seed, sample_index]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> 1


def replica_seed(condition_seed: int, replica: int) -> int:
    """The seed of replica ``replica`` of an evaluation condition: distinct per (condition seed, replica),
    reproducible, in ``[0, 2**31)``."""
    import numpy as np

    return int(np.random.SeedSequence([condition_seed, replica]).generate_state(1)[0] & 0x7FFFFFFF)


def next_seed(seed: int) -> int:
    """The seed after ``seed`` (wrapping at :data:`MAX_SEED`): what a sample is made again with."""
    return (int(seed) + 1) % (MAX_SEED + 1)


def generators(seeds: Sequence[int], device) -> list:
    """One ``torch.Generator`` on ``device`` per seed."""
    import torch

    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
