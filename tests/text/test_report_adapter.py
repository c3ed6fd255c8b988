# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The report-embedding adapter: shapes, masking, what it learns to attend to, and the UNet it conditions."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DiffusionModelUNet

from monai_xreal.networks import AdaptedContextUNet
from monai_xreal.text import ReportEmbeddingAdapter


def test_adapter_pools_any_number_of_tokens_into_a_fixed_number():
    adapter = ReportEmbeddingAdapter(32, num_tokens=5, num_heads=4, out_dim=48)
    for length in (1, 7, 77):
        assert adapter(torch.randn(3, length, 32)).shape == (3, 5, 48)
    assert adapter.embed_dim == 48
    weights = adapter.token_weights(torch.randn(2, 9, 32))
    assert weights.shape == (2, 5, 9) and torch.allclose(weights.sum(-1), torch.ones(2, 5))
    with pytest.raises(ValueError, match="must divide"):
        ReportEmbeddingAdapter(30, num_heads=4)
    with pytest.raises(ValueError, match=r"\(B, L, D\)"):
        adapter(torch.randn(4, 32))


def test_padding_tokens_get_no_attention_and_do_not_change_the_result():
    torch.manual_seed(0)
    adapter = ReportEmbeddingAdapter(16, num_tokens=3, num_heads=2).eval()
    tokens = torch.randn(2, 6, 16)
    padding = torch.tensor([[False] * 4 + [True] * 2, [False] * 6])
    changed = tokens.clone()
    changed[0, 4:] = torch.randn(2, 16) * 10
    assert torch.allclose(adapter(tokens, padding)[0], adapter(changed, padding)[0], atol=1e-6)
    assert torch.count_nonzero(adapter.token_weights(tokens, padding)[0, :, 4:]) == 0


def test_adapter_learns_which_tokens_matter():
    """A target carried by one marked token among distractors: after training, attention goes to the marked one."""
    torch.manual_seed(0)
    dim, length = 16, 12
    adapter = ReportEmbeddingAdapter(dim, num_tokens=1, num_heads=1)
    head = torch.nn.Linear(dim, 1)
    optimiser = torch.optim.Adam([*adapter.parameters(), *head.parameters()], lr=3e-3)

    def batch(size):
        tokens = torch.randn(size, length, dim)
        tokens[..., 0] = 0.0
        where = torch.randint(0, length, (size,))
        tokens[torch.arange(size), where, 0] = 3.0  # the marker
        return tokens, tokens[torch.arange(size), where, 1:2], where

    before = adapter.token_weights(*batch(256)[:1])
    for _ in range(400):
        tokens, target, _ = batch(64)
        loss = torch.nn.functional.mse_loss(head(adapter(tokens)[:, 0]), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    tokens, target, where = batch(256)
    weights = adapter.token_weights(tokens)[:, 0]
    on_marker = weights[torch.arange(256), where]
    assert before.max() < 0.5 and on_marker.mean() > 0.8
    assert torch.nn.functional.mse_loss(head(adapter(tokens)[:, 0]), target) < 0.2 * target.var()


def test_adapted_unet_is_the_unet_on_the_adapted_context():
    torch.manual_seed(0)
    unet = DiffusionModelUNet(spatial_dims=2, in_channels=3, out_channels=3, channels=[8, 16],
                              attention_levels=[False, True], num_res_blocks=1, num_head_channels=[0, 8],
                              norm_num_groups=8, with_conditioning=True, cross_attention_dim=24).eval()  # fmt: skip
    adapter = ReportEmbeddingAdapter(32, num_tokens=4, num_heads=4, out_dim=24).eval()
    network = AdaptedContextUNet(unet, adapter)
    x, t, context = torch.randn(2, 3, 8, 8), torch.tensor([10, 500]), torch.randn(2, 77, 32)
    with torch.no_grad():
        assert torch.equal(network(x, t, context), unet(x, t, context=adapter(context)))
    with torch.no_grad():  # MONAI zero-initialises the output convolution, which would stop every gradient
        for parameter in unet.parameters():
            if not parameter.any():
                parameter.normal_(std=0.02)
    network(x, t, context).square().mean().backward()
    assert adapter.queries.grad is not None and torch.count_nonzero(adapter.queries.grad) > 0
    assert set(network.state_dict()) == {f"unet.{k}" for k in unet.state_dict()} | {
        f"adapter.{k}" for k in adapter.state_dict()
    }
