# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Benchmark parts: network timing and UNet evaluation counts, guidance batching, the plain-loop reference, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from monai_xreal.benchmark import (
    REFERENCE_RECIPE,
    SamplingRecipe,
    benchmark_conditions,
    compare_text_to_image,
    format_table,
    measure_recipe,
    measure_variant,
    peak_memory,
    time_networks,
)
from monai_xreal.cli.main import main


@pytest.fixture(scope="module")
def conditions(tiny_pipeline):
    return benchmark_conditions(3, 64, seed=5, source="phantoms")


def test_benchmark_conditions_have_finding_regions(conditions):
    assert len(conditions) == 3 and len({c.prompt for c in conditions}) == 3
    assert all(c.pathology.any() and c.anatomy.max() >= 3 for c in conditions)


def test_sample_conditions_need_no_data_package():
    """The embedded bundle's sample condition at the requested size, a seed and a finding each (timing only)."""
    sample = benchmark_conditions(5, 96, seed=7, source="sample")
    assert [c.seed for c in sample] == [7, 8, 9, 10, 11] and len({c.prompt for c in sample}) == 4
    for c in sample:
        assert c.anatomy.shape == c.pathology.shape == (1, 96, 96) and c.image is None
        assert set(c.anatomy.unique().tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0} and c.pathology.sum() > 0


@pytest.mark.parametrize("batched", [True, False])
def test_unet_evaluations_are_counted_per_image_and_branch(tiny_pipeline, anatomy, pathology, batched):
    steps = 3
    with time_networks(tiny_pipeline, torch.device("cpu")) as times:
        tiny_pipeline(anatomy.repeat(2, 1, 1, 1), pathology.repeat(2, 1, 1, 1), "Pleural Effusion",
                      num_inference_steps=steps, seed=0, batched_guidance=batched)  # fmt: skip
    # anatomy stage: one evaluation per image and step; pathology stage: two (guidance branches)
    assert times.unet_samples == 2 * (steps + 2 * steps)
    assert times.calls["unet"] == steps + (1 if batched else 2) * steps
    assert times.calls["anatomy_controller"] == 2  # encode + decode
    assert times.calls["autoencoder"] == 2 + 2  # encode both stages' known latents, decode both stages
    assert 0 < times.total
    # the wrappers are gone afterwards
    assert "forward" not in vars(tiny_pipeline.unet) and "encode" not in vars(tiny_pipeline.autoencoder)


def test_overhead_sees_time_spent_outside_the_networks(tiny_pipeline, conditions, monkeypatch):
    import time

    import monai_xreal.control.sampling as sampling

    recipe = SamplingRecipe("tiny", 2, batch_size=3)
    plain = measure_recipe(tiny_pipeline, conditions, recipe)
    step = sampling.scheduler_step
    delay = 0.05

    def slow_step(*args, **kwargs):
        time.sleep(delay)
        return step(*args, **kwargs)

    monkeypatch.setattr(sampling, "scheduler_step", slow_step)
    slowed = measure_recipe(tiny_pipeline, conditions, recipe)
    steps = 2 * recipe.num_inference_steps  # one scheduler step per step of each stage, one batch
    outside = slowed.split_seconds - slowed.network.total
    assert outside >= steps * delay
    assert slowed.overhead > plain.overhead
    assert slowed.network.unet_samples == plain.network.unet_samples == 3 * (2 + 2 * 2)


def test_nested_and_shared_timers_restore_the_modules(tiny_pipeline):
    from types import SimpleNamespace

    unet, autoencoder = tiny_pipeline.unet, tiny_pipeline.autoencoder
    shared = SimpleNamespace(unet=unet, autoencoder=autoencoder, anatomy_controller=autoencoder)
    x = torch.randn(1, unet.in_channels, 16, 16)
    context = tiny_pipeline.encode_prompts(["a"])
    with time_networks(shared, torch.device("cpu")) as outer:
        with time_networks(tiny_pipeline, torch.device("cpu")) as inner:
            unet(x, torch.tensor([10]), context=context)
        assert "forward" in vars(unet)  # the outer wrapper is back in place
        unet(x, torch.tensor([10]), context=context)
    assert inner.calls["unet"] == 1 and outer.calls["unet"] == 2 and outer.unet_samples == 2
    assert "anatomy_controller" not in outer.calls  # the same module under two names counts once
    assert "forward" not in vars(unet) and "encode" not in vars(autoencoder)


def test_batched_and_unbatched_guidance_give_the_same_images(tiny_pipeline, anatomy, pathology):
    kwargs = dict(num_inference_steps=3, seed=4, guidance_scale=5.0)
    batched = tiny_pipeline(anatomy, pathology, "Pneumothorax", batched_guidance=True, **kwargs)
    separate = tiny_pipeline(anatomy, pathology, "Pneumothorax", batched_guidance=False, **kwargs)
    assert torch.allclose(batched, separate, atol=1e-5)


def test_peak_memory_is_reset_for_each_block():
    cpu = torch.device("cpu")
    with peak_memory(cpu) as large:
        block = torch.ones(256 * 2**20 // 4)  # 256 MiB, touched
        del block
    with peak_memory(cpu) as small:
        block = torch.ones(2**20 // 4)
        del block
    assert large.kind == small.kind == "process peak RSS"
    # the second block's peak no longer holds the first block's allocation
    assert large.mib - small.mib > 200


def test_measure_recipe_row(tiny_pipeline, conditions):
    from monai_xreal.metrics import load_segmenter

    recipe = SamplingRecipe("tiny", 2, batch_size=2)
    result = measure_recipe(tiny_pipeline, conditions, recipe, load_segmenter())
    row = result.as_dict()
    assert row["images"] == 3 and row["batch_size"] == 2
    assert row["unet_evaluations_per_image"] == pytest.approx(2 + 2 * 2)
    assert row["overhead"] >= 1.0 and row["images_per_second"] > 0
    assert 0 <= row["mean_dice"] <= 1
    reference = measure_recipe(tiny_pipeline, conditions, REFERENCE_RECIPE.__class__("ref", 2, batched_guidance=False))
    assert reference.as_dict()["network_calls"]["unet"] > row["network_calls"]["unet"]


def test_variants_run_and_restore_the_unet(tiny_pipeline, conditions):
    recipe = SamplingRecipe("tiny", 1, batch_size=3)
    flags = [m.use_flash_attention for m in tiny_pipeline.unet.modules() if hasattr(m, "use_flash_attention")]
    for variant in ("eager-attention", "channels-last", "bf16-autocast"):
        row = measure_variant(tiny_pipeline, conditions, recipe, variant).as_dict()
        assert row["variant"] == variant and row["images_per_second"] > 0 and row["overhead"] is None
    after = [m.use_flash_attention for m in tiny_pipeline.unet.modules() if hasattr(m, "use_flash_attention")]
    assert after == flags
    assert next(tiny_pipeline.unet.parameters()).is_contiguous()
    with pytest.raises(ValueError, match="unknown variant"):
        measure_variant(tiny_pipeline, conditions, recipe, "fp8")


def test_pipeline_matches_a_plain_scheduler_loop(tiny_bundle):
    from monai_xreal import XRealPipeline

    pipeline = XRealPipeline.from_bundle(tiny_bundle, device="cpu")
    generator = torch.Generator().manual_seed(0)
    for parameter in pipeline.unet.parameters():  # zero-initialised layers would make every prediction zero
        if not parameter.any():
            parameter.data = 0.05 * torch.randn(parameter.shape, generator=generator)
    result = compare_text_to_image(pipeline, batch_size=2, steps=3, repeats=1)
    assert result["max_abs_image_difference"] < 1e-5
    assert result["ratio"] > 0 and result["pipeline_seconds"] > 0


def test_benchmark_command(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main([
        "benchmark", "--bundle", str(tiny_bundle), "--num-images", "2", "--batch-sizes", "1", "2",
        "--reference-steps", "2", "--num-inference-steps", "1", "--overhead-point", "2", "1", "--variants", "eager-attention",
        "--repeats", "2", "--output", str(out),
    ])  # fmt: skip
    assert code == 0
    results = json.loads(out.read_text())
    assert [(r["name"], r["batch_size"]) for r in results["rows"]] == [
        ("xreal-reference", 1),
        ("xreal-reference", 2),
        ("fast", 1),
        ("fast", 2),
    ]
    reference, fast = results["rows"][0], results["rows"][2]
    assert reference["unet_evaluations_per_image"] == pytest.approx(3 * 2)  # XReal: 1 + 2 per step
    assert fast["unet_evaluations_per_image"] == pytest.approx(3 * 1)
    for row in results["rows"]:  # two alternating rounds per row: the median and the range of both
        low, high = row["images_per_second_range"]
        assert row["repeats"] == 2 and len(row["images_per_second_runs"]) == 2
        assert low <= row["images_per_second"] <= high and sorted(row["images_per_second_runs"]) == [low, high]
    assert results["overhead"]["batch_size"] == 2 and results["overhead"]["overhead"] >= 1
    assert results["variants"][0]["variant"] == "eager-attention"
    assert results["text_to_image"]["ratio"] > 0
    printed = capsys.readouterr().out
    assert "| xreal-reference |" in printed and "speed-up" in printed
    assert format_table(results).count("\n| ") == 1 + 4 + 1 + 1  # header, rows, overhead, variant


@pytest.mark.parametrize("argv", [["--num-images", "0"], ["--batch-sizes", "0"], ["--variants", "fp8"],
                                  ["--output", "/no/such/dir/b.json"], ["--output", "/tmp"],
                                  ["--num-images", "4", "--batch-sizes", "8"], ["--device", "cuda:7"]])  # fmt: skip
def test_benchmark_command_bad_input_is_one_line(argv, capsys):
    try:
        code = main(["benchmark", *argv])
    except SystemExit as exit_:
        code = int(exit_.code)
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err


def test_the_variant_names_help_lists_are_the_variants_measured():
    from monai_xreal.benchmark.recipes import VARIANT_NAMES
    from monai_xreal.benchmark.runner import VARIANTS

    assert tuple(VARIANTS) == VARIANT_NAMES


def test_against_diffusers_converts_and_times_both_pipelines_on_the_same_noise(tmp_path, capsys):
    """The comparison on a tiny Stable-Diffusion-format model: both pipelines make the same images (so the timing
    compares the same work), every round times both, and a single round is flagged as too noisy to compare."""
    pytest.importorskip("diffusers")  # an extra of the test install: always present in CI
    from monai_xreal.benchmark.stable_diffusion import write_random_stable_diffusion

    folder = tmp_path / "sd"
    write_random_stable_diffusion(folder, unet_channels=(32, 32), latent_size=8, context_dim=32, text_length=16,
                                  autoencoder_channels=(32, 32))  # fmt: skip
    out = tmp_path / "against.json"
    code = main(["benchmark", "--against-diffusers", str(folder), "--batch-sizes", "1", "2", "--num-inference-steps",
                 "3", "--repeats", "1", "--output", str(out)])  # fmt: skip
    assert code == 0
    results = json.loads(out.read_text())
    assert [r["batch_size"] for r in results["rows"]] == [1, 2]
    for row in results["rows"]:
        assert row["max_abs_image_difference"] < 1e-4
        assert row["ratio"]["median"] == pytest.approx(
            row["converted_seconds"]["median"] / row["diffusers_seconds"]["median"]
        )
        assert row["ratio"]["too_noisy"]  # one round cannot be compared
    assert "converted / diffusers" in capsys.readouterr().out


def test_spread_flags_figures_too_noisy_to_compare():
    from monai_xreal.benchmark.timing import format_spread, spread

    steady = spread([1.0, 1.02, 0.99, 1.01])
    assert steady["median"] == pytest.approx(1.005) and (steady["min"], steady["max"]) == (0.99, 1.02)
    assert not steady["too_noisy"] and "too noisy" not in format_spread(steady)
    assert spread([1.0, 1.3, 1.1])["too_noisy"] and spread([1.0, 1.0])["too_noisy"]
    assert format_spread(spread([1.0, 1.5, 1.2])).endswith("too noisy")


def test_sampler_comparison_counts_evaluations_and_scores_placement(responsive_pipeline):
    from monai_xreal.benchmark.runner import benchmark_conditions
    from monai_xreal.benchmark.samplers import compare_samplers, format_sampler_table

    conditions = benchmark_conditions(2, 64, seed=1000, source="phantoms")
    recipes = {"two steps": dict(num_inference_steps=2, blending="noise"),
               "short anatomy + feather": dict(num_inference_steps=1, anatomy_num_inference_steps=3, blending="data",
                                               eta=0.0, pathology_feather=2.0)}  # fmt: skip
    rows = compare_samplers(responsive_pipeline, conditions, recipes=recipes, batch_size=2, progress=False)
    assert [r["unet_evaluations_per_image"] for r in rows] == [2 + 2 * 2, 3 + 2 * 1]
    assert all(0 <= r["placement"] <= 1 and r["images_per_second"] > 0 for r in rows)
    assert "| short anatomy + feather | 5 |" in format_sampler_table(rows)
