# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
import pytest
import torch


def test_kernel_distance_is_unbiased_near_zero_for_one_distribution_and_grows_with_a_shift():
    from monai_xreal.metrics import kernel_distance

    g = torch.Generator().manual_seed(0)
    real, same = torch.randn(200, 16, generator=g), torch.randn(200, 16, generator=g)
    assert abs(kernel_distance(real, same)) < 0.02
    assert kernel_distance(real, same + 0.5) > 10 * abs(kernel_distance(real, same))
    assert kernel_distance(real, same + 1.0) > kernel_distance(real, same + 0.5)
    with pytest.raises(ValueError):
        kernel_distance(real[:1], same)
