# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""XReal's networks with random weights for timing (``benchmark --full-size``), and Stable Diffusion 1.5's sizes for
the comparison against diffusers: built as their converted / published counterparts are, tested narrow."""

from __future__ import annotations

import functools
import json

import pytest
import torch

from monai_xreal.benchmark import benchmark_conditions, time_networks
from monai_xreal.benchmark.full_size import stand_in_vocabulary, xreal_size_pipeline
from monai_xreal.cli.main import main

NARROW = {  # XReal's layout (four UNet levels, attention below the first, three autoencoder levels), narrow
    "unet": {"spatial_dims": 2, "in_channels": 3, "out_channels": 3, "channels": [32, 32, 32, 32],
             "attention_levels": [False, True, True, True], "num_res_blocks": 1, "num_head_channels": [16] * 4,
             "norm_num_groups": 32, "with_conditioning": True, "transformer_num_layers": 1, "cross_attention_dim": 32},
    "autoencoder": {"spatial_dims": 2, "in_channels": 3, "out_channels": 3, "channels": [32, 32, 32],
                    "attention_levels": [False, False, False], "num_res_blocks": 1, "latent_channels": 3},
    "anatomy_controller": {"spatial_dims": 2, "in_channels": 3, "out_channels": 3, "channels": [32, 32, 32],
                           "attention_levels": [False, False, False], "num_res_blocks": 1, "latent_channels": 3},
    "text_encoder": {"max_length": 16, "dim": 32, "depth": 1, "heads": 2, "dim_head": 16, "vocab_size": 128},
}  # fmt: skip


@pytest.fixture(scope="module")
def narrow_pipeline():
    return xreal_size_pipeline("cpu", NARROW, spatial_shape=(64, 64), seed=0)


def test_full_size_pipeline_is_a_converted_xreal_with_the_bundle_defaults(narrow_pipeline):
    from monai_xreal.bundle import default_bundle_path, read_bundle_config, sampling_defaults

    pipeline = narrow_pipeline
    attention = [m.use_flash_attention for m in pipeline.unet.modules() if hasattr(m, "use_flash_attention")]
    assert attention and all(attention)  # what the converters write: PyTorch's fused attention
    assert pipeline.anatomy_controller is not None and pipeline.scale_factor == pytest.approx(0.18215)
    betas = pipeline.scheduler.betas  # XReal's LDM "linear" schedule: linear in sqrt(beta), 0.0015 to 0.0295
    assert len(betas) == 1000 and float(betas[0]) == pytest.approx(0.0015) and float(betas[-1]) == pytest.approx(0.0295)
    bundle = sampling_defaults(read_bundle_config(default_bundle_path()))
    assert bundle and all(pipeline.sampling_defaults[knob] == value for knob, value in bundle.items())
    assert pipeline.sampling_defaults["num_inference_steps"] == 4
    same = xreal_size_pipeline("cpu", NARROW, spatial_shape=(64, 64), seed=0)
    other = xreal_size_pipeline("cpu", NARROW, spatial_shape=(64, 64), seed=1)
    first = next(iter(pipeline.unet.state_dict()))
    assert torch.equal(pipeline.unet.state_dict()[first], same.unet.state_dict()[first])
    assert not torch.equal(pipeline.unet.state_dict()[first], other.unet.state_dict()[first])


def test_full_size_pipeline_samples_a_controlled_image_in_twelve_unet_evaluations(narrow_pipeline):
    condition = benchmark_conditions(1, 64, seed=5, source="phantoms")[0]
    anatomy, pathology = condition.anatomy[None], condition.pathology[None]
    with time_networks(narrow_pipeline, torch.device("cpu")) as times:
        images = narrow_pipeline(anatomy, pathology, condition.prompt, seed=3)
    assert images.shape == (1, 1, 64, 64) and torch.isfinite(images.as_tensor()).all()
    assert times.unet_samples == 4 + 2 * 4  # the bundle's default: 4 anatomy steps, 4 guided pathology steps
    again = narrow_pipeline(anatomy, pathology, condition.prompt, seed=3)
    assert torch.equal(images.as_tensor(), again.as_tensor())


def test_the_anatomy_controller_follows_the_autoencoder_unless_given():
    narrow = {name: arguments for name, arguments in NARROW.items() if name != "anatomy_controller"}
    pipeline = xreal_size_pipeline("cpu", narrow, spatial_shape=(64, 64))

    def count(network):
        return sum(p.numel() for p in network.parameters())

    assert count(pipeline.anatomy_controller) == count(pipeline.autoencoder) < 2_000_000  # not XReal's 55M


def test_unknown_component_is_refused():
    from monai_xreal.interop.convert import compvis_definitions

    with pytest.raises(ValueError, match="controlnet"):
        compvis_definitions({"controlnet": {}})


def test_stand_in_vocabulary_tokenises_any_prompt(tmp_path):
    from monai_xreal.text import BERTEmbedder

    vocab = stand_in_vocabulary(tmp_path / "vocab.txt")
    encoder = BERTEmbedder(vocab, **NARROW["text_encoder"])
    tokens = encoder.tokenizer(["Right pleural effusion (3 cm), 63 year old White female; PA view."])["input_ids"][0]
    assert len(tokens) > 20 and encoder.tokenizer.unk_token_id not in tokens


def test_benchmark_command_full_size(monkeypatch, tmp_path, capsys):
    import monai_xreal.benchmark.full_size as full_size

    monkeypatch.setattr(full_size, "xreal_size_pipeline",
                        functools.partial(xreal_size_pipeline, architecture=NARROW, spatial_shape=(64, 64)))  # fmt: skip
    out = tmp_path / "full.json"
    code = main(["benchmark", "--full-size", "--num-images", "1", "--batch-sizes", "1", "--skip-reference",
                 "--num-inference-steps", "4", "--overhead-point", "1", "4", "--no-text-to-image", "--repeats", "1",
                 "--output", str(out)])  # fmt: skip
    assert code == 0
    results = json.loads(out.read_text())
    (row,) = results["rows"]
    assert row["unet_evaluations_per_image"] == pytest.approx(12) and row["mean_dice"] is None
    assert results["overhead"]["overhead"] >= 1
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| fast |")]
    assert table and table[0].rstrip(" |").endswith("-")  # no Dice on random weights


@pytest.mark.parametrize("clash", [["--bundle", "x"], ["--segmenter", "x"], ["--samplers"],
                                   ["--against-diffusers", "x"]])  # fmt: skip
def test_full_size_refuses_what_needs_weights(clash, capsys):
    assert main(["benchmark", "--full-size", *clash]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--full-size" in err and clash[0] in err


def test_sd15_preset_has_stable_diffusion_15s_networks():
    pytest.importorskip("diffusers")  # an extra of the test install: always present in CI
    from monai_xreal.benchmark.stable_diffusion import PRESETS, stable_diffusion_networks

    with torch.device("meta"):  # shapes only
        networks = stable_diffusion_networks(text_length=77, vocab={"size": 49408, "bos": 49406, "eos": 49407},
                                             **PRESETS["sd15"])  # fmt: skip
    counts = {name: sum(p.numel() for p in network.parameters()) for name, network in networks.items()}
    assert counts == {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}  # SD 1.5 with CLIP's vocab


def test_random_stable_diffusion_command_writes_a_folder_diffusers_loads(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    from monai_xreal.benchmark.stable_diffusion import main as write

    write([str(tmp_path / "sd"), "--unet-channels", "32", "32", "--latent-size", "8"])
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(tmp_path / "sd"), safety_checker=None)
    assert tuple(pipe.unet.config.block_out_channels) == (32, 32) and pipe.unet.config.sample_size == 8
    assert pipe.text_encoder.config.num_hidden_layers == 4  # the small preset's


def test_against_diffusers_in_bf16_runs_both_under_the_same_autocast(tmp_path):
    pytest.importorskip("diffusers")
    from monai_xreal.benchmark.against_diffusers import compare_with_diffusers, format_diffusers_comparison
    from monai_xreal.benchmark.stable_diffusion import write_random_stable_diffusion

    folder = tmp_path / "sd"
    write_random_stable_diffusion(folder, unet_channels=(32, 32), latent_size=8, context_dim=32, text_length=16,
                                  autoencoder_channels=(32, 32))  # fmt: skip
    exact = compare_with_diffusers(folder, batch_sizes=(1,), num_inference_steps=3, repeats=1, progress=False)
    bf16 = compare_with_diffusers(folder, batch_sizes=(1,), num_inference_steps=3, repeats=1, progress=False,
                                  bf16=True)  # fmt: skip
    assert exact["precision"] == "fp32" and bf16["precision"] == "bf16 autocast"
    assert exact["rows"][0]["max_abs_image_difference"] < 1e-4
    # both sides in bf16: the images still agree closely, but the rounding shows (autocast did take effect)
    assert 0 < bf16["rows"][0]["max_abs_image_difference"] < 0.05
    assert "precision: bf16 autocast" in format_diffusers_comparison(bf16)


def test_bf16_needs_the_diffusers_comparison(capsys):
    assert main(["benchmark", "--bf16"]) == 2
    assert "--against-diffusers" in capsys.readouterr().err
