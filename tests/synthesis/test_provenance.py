# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Synthetic DICOM output, provenance sidecars and ``generate --from-provenance``."""

from __future__ import annotations

import hashlib
import json
import shutil

import pydicom
import torch
from conftest import dciodvfy_report, randomise_weights
from monai.transforms import LoadImage

from monai_xreal.cli.main import main
from monai_xreal.io.dicom import PRIVATE_CREATOR, PRIVATE_GROUP, read_dicom_provenance


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dciodvfy(path) -> str:
    """dicom3tools' IOD validator; its errors (not its warnings) fail the test."""
    report = dciodvfy_report(path)
    assert "Error" not in report, report
    return report


def generate(tiny_bundle, out, *extra):
    return main(["generate", "--bundle", str(tiny_bundle), "--num-inference-steps", "2", "--output-dir", str(out),
                 *extra])  # fmt: skip


def test_dicom_output_is_valid_synthetic_secondary_capture(tiny_bundle, tiny_pipeline, mask_files, tmp_path):
    anatomy = str(mask_files["anatomy"])
    assert generate(tiny_bundle, tmp_path / "a", "--anatomy", anatomy, "--num-images", "2", "--seed", "4",
                    "--batch-size", "1", "--format", "dcm", "--patient-id", "Study-7 ünï") == 0  # fmt: skip
    assert generate(tiny_bundle, tmp_path / "b", "--anatomy", anatomy, "--seed", "4", "--format", "dcm") == 0
    files = sorted((tmp_path / "a").glob("*.dcm"))
    assert [f.name for f in files] == ["xreal_seed4.dcm", "xreal_seed5.dcm"]
    for file in files:
        dciodvfy(file)
    first, second, rerun = (pydicom.dcmread(f) for f in (*files, tmp_path / "b" / "xreal_seed4.dcm"))
    sidecar = json.loads((tmp_path / "a" / "xreal_seed4.json").read_text(encoding="utf-8"))

    assert first.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage and first.ConversionType == "SYN"
    assert list(first.ImageType) == ["DERIVED", "SECONDARY"] and first.BurnedInAnnotation == "NO"
    assert first.Modality == "OT" and "SYNTHETIC" in first.DerivationDescription
    assert sidecar["bundle"]["model_sha256"] in first.DerivationDescription
    assert str(first.PatientName) == "SYNTHETIC^CXR" and first.PatientID == "Study-7 ünï"
    assert first.PatientBirthDate == "" and first.PatientSex == "" and "OtherPatientIDs" not in first
    # one study and series per run, one instance per image, and fresh UIDs on every run
    assert first.StudyInstanceUID == second.StudyInstanceUID and first.SeriesInstanceUID == second.SeriesInstanceUID
    assert first.SOPInstanceUID != second.SOPInstanceUID
    assert {rerun.StudyInstanceUID, rerun.SeriesInstanceUID, rerun.SOPInstanceUID}.isdisjoint(
        {first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID}
    )
    block = first.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    assert block[0x01].value == "SYNTHETIC" and block[0x04].value == sidecar["bundle"]["model_sha256"]
    assert read_dicom_provenance(files[0]) == {k: v for k, v in sidecar.items() if k != "output"}
    assert sidecar["output"]["dicom"]["instance_uid"] == first.SOPInstanceUID
    assert sidecar["output"]["sha256"] == sha256(files[0])

    # pixels: MONAI's readers give the generated image, 16-bit
    expected = tiny_pipeline(anatomy=LoadImage(image_only=True, ensure_channel_first=True)(anatomy)[None],
                             num_inference_steps=2, seed=4)[0, 0]  # fmt: skip
    by_pydicom = LoadImage(image_only=True, reader="PydicomReader")(str(files[0])) / 65535
    by_default = LoadImage(image_only=True)(str(files[0])).squeeze() / 65535
    for image in (by_pydicom, by_default):
        assert image.shape == (32, 32)
        torch.testing.assert_close(image.as_tensor().float(), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.as_tensor(first.pixel_array.T / 65535).float(), expected, atol=1e-4, rtol=0)


def test_sidecar_says_how_each_image_was_made(tiny_bundle, mask_files, tmp_path):
    out = tmp_path / "out"
    assert generate(tiny_bundle, out, "--anatomy", str(mask_files["anatomy"]), "--pathology",
                    str(mask_files["pathology"]), "--prompt", "Épanchement pleural", "--num-images", "3",
                    "--batch-size", "2", "--seed", "10", "--guidance-scale", "3.5") == 0  # fmt: skip
    record = json.loads((out / "xreal_seed11.json").read_text(encoding="utf-8"))
    assert record["synthetic"] is True and record["prompt"] == "Épanchement pleural"
    weights = {f"models/{f.name}": sha256(f) for f in sorted((tiny_bundle / "models").iterdir())}
    assert {k: v for k, v in record["bundle"]["weights"].items() if k.startswith("models/")} == weights
    assert any(k.startswith("text_encoder/") for k in record["bundle"]["weights"])
    assert record["bundle"]["version"] == json.loads((tiny_bundle / "configs" / "metadata.json").read_text())["version"]
    assert record["anatomy"]["sha256"] == sha256(mask_files["anatomy"])
    assert record["pathology"]["sha256"] == sha256(mask_files["pathology"])
    assert record["sampling"] == {"num_inference_steps": 2, "guidance_scale": 3.5, "anatomy_soft_value": 0.2,
                                  "anatomy_step_fraction": 0.7, "eta": 1.0, "blending": "noise",
                                  "anatomy_num_inference_steps": 0, "pathology_feather": 2.0, "scheduler": "ddim", "seed": 11,
                                  "batch_seeds": [10, 11], "batch_index": 1}  # fmt: skip
    assert record["software"]["torch"] == torch.__version__ and record["software"]["monai"]
    assert record["output"] == {"file": "xreal_seed11.png", "format": "png", "sha256": sha256(out / "xreal_seed11.png")}
    third = json.loads((out / "xreal_seed12.json").read_text(encoding="utf-8"))["sampling"]
    assert third["batch_seeds"] == [12] and third["batch_index"] == 0


def test_from_provenance_reproduces_bit_for_bit_and_checks_its_inputs(tiny_bundle, mask_files, tmp_path, capsys):
    masks = tmp_path / "masks"
    shutil.copytree(mask_files["anatomy"].parent, masks, ignore=shutil.ignore_patterns("masks"))
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    out = tmp_path / "out"
    assert generate(bundle, out, "--anatomy", str(masks / "anatomy.png"), "--pathology", str(masks / "pathology.png"),
                    "--prompt", "Edema", "--num-images", "3", "--batch-size", "2", "--seed", "20") == 0  # fmt: skip
    for fmt in ("png", "nii.gz"):
        again = tmp_path / f"again_{fmt}"
        extra = ["--format", fmt] if fmt != "png" else []
        capsys.readouterr()
        assert main(["generate", "--from-provenance", str(out / "xreal_seed21.json"), "--output-dir", str(again),
                     *extra]) == 0  # fmt: skip
        assert "bit for bit" in capsys.readouterr().out
        if fmt == "png":
            assert sha256(again / "xreal_seed21.png") == sha256(out / "xreal_seed21.png")
        replay = json.loads((again / "xreal_seed21.json").read_text(encoding="utf-8"))
        assert replay["image_sha256"] == json.loads((out / "xreal_seed21.json").read_text())["image_sha256"]

    (masks / "pathology.png").write_bytes((masks / "anatomy.png").read_bytes())
    assert main(["generate", "--from-provenance", str(out / "xreal_seed20.json"), "--output-dir",
                 str(tmp_path / "x")]) == 2  # fmt: skip
    assert "pathology.png has changed since the image was made" in capsys.readouterr().err
    weights = bundle / "models" / "model.pt"
    weights.write_bytes(weights.read_bytes() + b"\0")
    assert main(["generate", "--from-provenance", str(out / "xreal_seed20.json"), "--output-dir",
                 str(tmp_path / "x")]) == 2  # fmt: skip
    assert "model.pt has SHA-256" in capsys.readouterr().err and not (tmp_path / "x").exists()
    (tmp_path / "bad.json").write_text('{"schema": "something else"}')
    assert main(["generate", "--from-provenance", str(tmp_path / "bad.json"), "--output-dir", str(tmp_path / "x")]) == 2
    assert "is not a monai_xreal.provenance/1 record" in capsys.readouterr().err


IU_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation><uId id="CXR7"/><MedlineCitation><Article><Abstract>
<AbstractText Label="COMPARISON">None.</AbstractText>
<AbstractText Label="FINDINGS">Heart size is enlarged.   Lungs are clear.</AbstractText>
<AbstractText Label="IMPRESSION">Cardiomegaly.</AbstractText>
</Abstract></Article></MedlineCitation><parentImage id="CXR7_IM-1"/></eCitation>"""
MIMIC_TXT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 INDICATION:  Cough.
 FINDINGS:  Heart size is enlarged.
 Lungs are clear.
 IMPRESSION:  Cardiomegaly.
"""


def test_generate_from_a_report_file_uses_findings_and_impression(tiny_bundle, mask_files, tmp_path, capsys):
    from monai_xreal.data.reports import read_report_prompt

    (tmp_path / "cxr7.xml").write_text(IU_XML)
    (tmp_path / "s1.txt").write_text(MIMIC_TXT)
    (tmp_path / "plain.txt").write_text("  Small left pleural\n effusion. ")
    expected = "Heart size is enlarged. Lungs are clear. Cardiomegaly."
    assert read_report_prompt(tmp_path / "cxr7.xml") == read_report_prompt(tmp_path / "s1.txt") == expected
    assert read_report_prompt(tmp_path / "plain.txt") == "Small left pleural effusion."

    anatomy = ["--anatomy", str(mask_files["anatomy"]), "--seed", "3"]
    assert generate(tiny_bundle, tmp_path / "from_report", *anatomy, "--report", str(tmp_path / "s1.txt")) == 0
    assert generate(tiny_bundle, tmp_path / "from_prompt", *anatomy, "--prompt", expected) == 0
    image = "xreal_seed3.png"
    assert (tmp_path / "from_report" / image).read_bytes() == (tmp_path / "from_prompt" / image).read_bytes()
    record = json.loads((tmp_path / "from_report" / "xreal_seed3.json").read_text())
    assert record["prompt"] == expected and record["report"]["sha256"] == sha256(tmp_path / "s1.txt")

    (tmp_path / "empty.txt").write_text("FINDINGS:\nIMPRESSION:\n")
    (tmp_path / "bad.xml").write_text("<eCitation><AbstractText>")
    for args, reason in [(["--report", str(tmp_path / "empty.txt")], "holds no report text"),
                         (["--report", str(tmp_path / "bad.xml")], "malformed XML"),
                         (["--report", str(tmp_path / "none.txt")], "report: no such file"),
                         (["--report", str(tmp_path / "s1.txt"), "--prompt", "x"], "not both")]:  # fmt: skip
        capsys.readouterr()
        assert generate(tiny_bundle, tmp_path / "x", *args) == 2
        err = capsys.readouterr().err
        assert reason in err and len(err.strip().splitlines()) == 1


def test_generate_from_a_report_goes_through_the_bundles_report_adapter(tiny_bundle, mask_files, tmp_path, capsys):
    """A bundle that ships ``model_report_adapter.pt`` reads --report text through it (and --prompt text not);
    the sidecar records it and --from-provenance makes the same image again."""
    from monai_xreal import XRealPipeline
    from monai_xreal.bundle import read_bundle_config, save_weights

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    config = read_bundle_config(bundle)
    save_weights(randomise_weights(config.get_parsed_content("report_adapter_def"), seed=3),
                 bundle / "models" / "model_report_adapter.pt")  # fmt: skip
    unet = XRealPipeline.from_bundle(bundle, device="cpu").unet  # zero-initialised cross-attention ignores the text
    save_weights(randomise_weights(unet, seed=4, std=0.05), bundle / "models" / "model.pt")
    (tmp_path / "s1.txt").write_text(MIMIC_TXT)
    prompt = "Heart size is enlarged. Lungs are clear. Cardiomegaly."
    anatomy = ["--anatomy", str(mask_files["anatomy"]), "--seed", "3"]
    assert generate(bundle, tmp_path / "report", *anatomy, "--report", str(tmp_path / "s1.txt")) == 0
    assert generate(bundle, tmp_path / "prompt", *anatomy, "--prompt", prompt) == 0
    image = "xreal_seed3.png"
    assert (tmp_path / "report" / image).read_bytes() != (tmp_path / "prompt" / image).read_bytes()
    record = json.loads((tmp_path / "report" / "xreal_seed3.json").read_text())
    assert record["report_adapter"] is True and "models/model_report_adapter.pt" in record["bundle"]["weights"]
    assert json.loads((tmp_path / "prompt" / "xreal_seed3.json").read_text())["report_adapter"] is False
    pipe = XRealPipeline.from_bundle(bundle, device="cpu", overrides={"report_adapter": True})
    assert pipe.prompt_adapter is not None and torch.equal(
        pipe.encode_prompts([prompt]), pipe.prompt_adapter(pipe.text_encoder([prompt]))
    )
    capsys.readouterr()
    sidecar = tmp_path / "report" / "xreal_seed3.json"
    assert main(["generate", "--from-provenance", str(sidecar), "--output-dir", str(tmp_path / "again")]) == 0
    assert "bit for bit" in capsys.readouterr().out
    assert (tmp_path / "again" / image).read_bytes() == (tmp_path / "report" / image).read_bytes()
