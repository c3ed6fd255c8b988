# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal utility``: the classifier bundle trained under each protocol and seed (tiny DenseNet, 32x32, one
epoch, phantoms standing in for the real and synthetic sets), the report's AUCs and CIs, the mixing ratios, the
fine-tuning's initial weights, resuming, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.metrics import compute_roc_auc
from PIL import Image

from monai_xreal.cli.main import main
from monai_xreal.data.phantoms import PhantomGenerator
from monai_xreal.io.hashing import sha256_file
from monai_xreal.utility import UtilityStudy, bootstrap_auc, roc_auc_per_label, weighted_roc_auc

FINDINGS = ["Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Consolidation", "Nodule"]
PROTOCOLS = ["real", "mixed_0.5", "mixed_1", "synthetic", "finetune"]
SEEDS = 2
TINY = {"network_def#init_features": 8, "network_def#growth_rate": 4, "network_def#block_config": [1, 1, 1, 1],
        "spatial_size": [32, 32], "batch_size": 8, "train#event_handlers#tensorboard": None}  # fmt: skip


def write_phantoms(folder: Path, num: int, seed: int, key: str = "training") -> Path:
    """``num`` 64x64 phantoms (each finding drawn with chance 1/2) as PNGs and a MONAI datalist under ``key``."""
    folder.mkdir(parents=True)
    generator = PhantomGenerator(size=64, seed=seed, probabilities={name: 0.5 for name in FINDINGS})
    items = []
    for index in range(num):
        phantom = generator(index)
        name = f"phantom_{index:03d}.png"
        Image.fromarray(np.round(phantom.image[0].T * 255).astype(np.uint8)).save(folder / name)
        items.append({"image": name, "labels": {k: v for k, v in phantom.labels.items() if k in FINDINGS}})
    (folder / "datalist.json").write_text(json.dumps({key: items, "test": []}))  # an empty list is passed over
    return folder / "datalist.json"


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: threads only contend on the shared cores
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sets")
    return {"real": write_phantoms(root / "real", 16, seed=1), "synthetic": write_phantoms(root / "synthetic", 16, 2),
            "test": write_phantoms(root / "test", 16, seed=3, key="validation")}  # fmt: skip


def arguments(sets: dict[str, Path], output: Path, *extra: str, epochs: int = 1) -> list[str]:
    overrides = [a for k, v in TINY.items() for a in ("--override", f"{k}={json.dumps(v)}")]
    return ["utility", "--real", str(sets["real"]), "--synthetic", str(sets["synthetic"]), "--test", str(sets["test"]),
            "--output", str(output), "--epochs", str(epochs), "--seeds", str(SEEDS), "--ratios", "0.5,1",
            "--finetune-lr", "0", "--bootstrap", "200", "--device", "cpu", *overrides, *extra]  # fmt: skip


@pytest.fixture(scope="module")
def study(sets, one_thread, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("study")
    argv = arguments(sets, out / "report.json")
    assert main(argv) == 0
    return {"argv": argv, "out": out, "sets": sets, "report": json.loads((out / "report.json").read_text())}


def runs(study: dict, protocol: str) -> list[Path]:
    return [study["out"] / "report_runs" / protocol / f"seed_{seed}" for seed in range(SEEDS)]


def test_the_report_gives_every_protocol_per_label_and_mean_auc_with_cis(study):
    report = study["report"]
    assert list(report["protocols"]) == PROTOCOLS and report["settings"]["classes"] == FINDINGS
    assert report["test"]["num_images"] == 16 and report["settings"]["test"]["key"] == "validation"
    truth = torch.tensor(
        [
            [float(item["labels"][c]) for c in FINDINGS]
            for item in json.loads((runs(study, "real")[0] / "datalist.json").read_text())["test"]
        ]
    )
    for name, protocol in report["protocols"].items():
        summaries = [protocol["mean_auc"], *protocol["per_label"].values()]
        assert list(protocol["per_label"]) == FINDINGS
        for s in summaries:
            assert 0 <= s["low"] <= s["mean"] <= s["high"] <= 1 and len(s["per_seed"]) == SEEDS, (name, s)
            assert s["mean"] == pytest.approx(np.mean(s["per_seed"])) and s["replicates"] > 150
        assert protocol["mean_auc"]["mean"] == pytest.approx(np.mean([s["mean"] for s in summaries[1:]]))
        # each seed's AUC is MONAI's compute_roc_auc of that run's test probabilities
        for seed, folder in enumerate(runs(study, name)):
            probabilities = torch.tensor(json.loads((folder / "result.json").read_text())["probabilities"])
            for j, label in enumerate(FINDINGS):
                auc = float(compute_roc_auc(probabilities[:, j], truth[:, j]))
                assert protocol["per_label"][label]["per_seed"][seed] == pytest.approx(auc)
        if name != "real":
            delta = protocol["delta_vs_real"]["mean_auc"]
            assert delta["low"] <= delta["mean"] <= delta["high"]
            assert delta["mean"] == pytest.approx(
                protocol["mean_auc"]["mean"] - report["protocols"]["real"]["mean_auc"]["mean"]
            )
    figure = np.asarray(Image.open(study["out"] / "report.png"))
    assert figure.shape[1] == 640 and figure.shape[0] > 60 * (1 + len(FINDINGS))  # mean AUC, then each label


def test_each_protocol_trains_on_its_mix_of_real_and_synthetic_images(study, sets):
    expected = {"real": (16, 0), "mixed_0.5": (16, 8), "mixed_1": (16, 16), "synthetic": (0, 16), "finetune": (16, 0)}
    synthetic_images = {str((sets["synthetic"].parent / i["image"]).resolve())
                        for i in json.loads(sets["synthetic"].read_text())["training"]}  # fmt: skip
    draws = []
    for protocol, (real, synthetic) in expected.items():
        assert study["report"]["protocols"][protocol]["num_training"] == {"real": real, "synthetic": synthetic}
        for folder in runs(study, protocol):
            datalist = json.loads((folder / "datalist.json").read_text())
            sources = [item["source"] for item in datalist["training"]]
            assert (sources.count("real"), sources.count("synthetic")) == (real, synthetic), (protocol, folder)
            chosen = {item["image"] for item in datalist["training"] if item["source"] == "synthetic"}
            assert chosen <= synthetic_images and len(datalist["test"]) == 16
            if protocol == "mixed_0.5":
                draws.append(chosen)
    assert draws[0] != draws[1]  # each seed draws its own synthetic half


def test_fine_tuning_starts_from_the_synthetic_runs_weights(study):
    for seed in range(SEEDS):
        finetune, synthetic, real = (runs(study, p)[seed] for p in ("finetune", "synthetic", "real"))
        initial = json.loads((finetune / "result.json").read_text())["initial_weights"]
        assert initial["loaded"] is True and initial["sha256"] == sha256_file(synthetic / "model.pt")
        # fine-tuned with learning rate 0: its parameters are the synthetic run's, not a fresh network's
        tuned, start, fresh = (torch.load(f / "model.pt", weights_only=True) for f in (finetune, synthetic, real))
        parameters = [k for k in start if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
        assert all(torch.equal(tuned[k], start[k]) for k in parameters)
        assert not all(torch.equal(fresh[k], start[k]) for k in parameters)
    assert json.loads((runs(study, "real")[0] / "result.json").read_text())["initial_weights"] is None


def test_a_rerun_skips_the_finished_runs_and_resumes_the_unfinished_one(study, capsys):
    folders = [f for p in PROTOCOLS for f in runs(study, p)]
    before = {p: p.stat().st_mtime_ns for f in folders for p in f.glob("*.pt")}
    assert main(study["argv"]) == 0
    again = json.loads((study["out"] / "report.json").read_text())
    assert not [r["run"] for r in again["runs"] if r["trained_now"]]
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing trained, nothing saved
    assert again["protocols"] == study["report"]["protocols"]
    # a run cut short after its last checkpoint: only it runs again, from that checkpoint, to the same result
    unfinished = runs(study, "mixed_1")[1]
    result = json.loads((unfinished / "result.json").read_text())
    (unfinished / "result.json").unlink()
    (unfinished / "model.pt").unlink()
    assert main(study["argv"]) == 0
    third = json.loads((study["out"] / "report.json").read_text())
    assert [r["run"] for r in third["runs"] if r["trained_now"]] == ["mixed_1/seed_1"]
    resumed = json.loads((unfinished / "result.json").read_text())
    assert Path(resumed["resumed_from"]).name == "checkpoint_final.pt" and resumed["start_epoch"] == 1
    assert result["resumed_from"] is None and result["start_epoch"] == 0
    assert np.allclose(json.loads((unfinished / "result.json").read_text())["probabilities"],
                       result["probabilities"], atol=1e-6)  # fmt: skip
    assert third["protocols"]["mixed_1"]["mean_auc"]["mean"] == pytest.approx(
        study["report"]["protocols"]["mixed_1"]["mean_auc"]["mean"])  # fmt: skip
    # other settings in the same work directory are refused before any training
    capsys.readouterr()
    assert main(arguments(study["sets"], study["out"] / "report.json", epochs=2)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--work-dir" in err[0] and "epochs" in err[0]


def test_two_process_data_parallel_study_with_gloo(sets, tmp_path):
    """Under ``torchrun`` every run merges ``multi_gpu_train.json``: DDP, each rank half the batches; rank 0 tests,
    writes the results and the report."""
    argv = [a for a in arguments(sets, tmp_path / "report.json", "--protocols", "real,finetune") if a != "--device"]
    argv.remove("cpu")
    argv[argv.index("--seeds") + 1] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "monai_xreal", *argv]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert list(report["protocols"]) == ["real", "finetune"] and report["environment"]["world_size"] == 2
    results = {r["run"]: json.loads((Path(r["folder"]) / "result.json").read_text()) for r in report["runs"]}
    assert list(results) == ["real/seed_0", "synthetic/seed_0", "finetune/seed_0"]  # the pre-training run too
    for result in results.values():  # 16 images, batch 8, two ranks: one batch each per epoch
        assert result["network"] == "DistributedDataParallel" and result["epoch_length"] == 1
    assert results["finetune/seed_0"]["initial_weights"]["loaded"] is True


def _edit(path: Path, out: Path, change) -> Path:
    content = json.loads(path.read_text())
    change(content)
    for items in content.values():
        for item in items:
            item["image"] = str((path.parent / item["image"]).resolve())
    out.write_text(json.dumps(content))
    return out


BAD = {
    "real without labels": ("real", lambda d: [i.pop("labels") for i in d["training"]], "have no 'labels'"),
    "synthetic with another label": ("synthetic", lambda d: d["training"][0]["labels"].update(Edema=1),
                                     "--synthetic adds ['Edema']"),  # fmt: skip
    "uncertain label": ("real", lambda d: d["training"][3]["labels"].update(Nodule=-1), "'Nodule' is -1"),
    "test without a positive": ("test", lambda d: [i["labels"].update(Cardiomegaly=0) for i in d["validation"]],
                                "Cardiomegaly (0 positives, 16 negatives)"),  # fmt: skip
    "missing image": ("synthetic", lambda d: d["training"][5].update(image="gone.png"), "1 image file(s) missing"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_exits_2_with_one_line(case, sets, tmp_path, capsys):
    which, change, message = BAD[case]
    bad = dict(sets, **{which: _edit(sets[which], tmp_path / f"{which}.json", change)})
    assert main(arguments(bad, tmp_path / "report.json")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("monai-xreal utility: error:") and message in err[0], err
    assert not (tmp_path / "report_runs").exists()  # refused before any run


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--ratios", "0.5,2"], "ratio 2 needs 32 synthetic images"),
        (["--override", "epochs=3"], "--override"),
        (["--protocols", "real,pretrain"], "unknown protocol(s) ['pretrain']"),
        (["--labels", "Cardiomegaly,Mass"], "--real lacks ['Mass']"),
    ],
)
def test_bad_options_exit_2_with_one_line(extra, message, sets, tmp_path, capsys):
    assert main(arguments(sets, tmp_path / "report.json", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_missing_datalist_and_test_images_used_for_training_are_refused(sets, tmp_path, capsys):
    assert main(arguments(dict(sets, real=tmp_path / "none.json"), tmp_path / "r.json")) == 2
    assert "--real: no such file" in capsys.readouterr().err
    assert main(arguments(dict(sets, test=sets["real"]), tmp_path / "r.json", "--test-key", "training")) == 2
    err = capsys.readouterr().err
    assert "16 test image(s) are also --real training images" in err and len(err.strip().splitlines()) == 1


def test_generated_sets_can_take_their_labels_from_the_prompts(sets, tmp_path):
    items = [
        {"image": str(sets["synthetic"].parent / f"phantom_{i:03d}.png"), "prompt": p}
        for i, p in enumerate(["Cardiomegaly and a small nodule.", "No Finding", "Left pleural effusion."])
    ]
    (tmp_path / "generated.json").write_text(json.dumps({"training": items}))
    study = UtilityStudy(sets["real"], tmp_path / "generated.json", sets["test"], tmp_path / "runs",
                         labels_from_prompt=True, protocols=["synthetic"], seeds=1, epochs=1)  # fmt: skip
    assert study.synthetic.labels_from_prompt and study.classes == FINDINGS
    labels = [item["labels"] for item in study.synthetic.items]
    assert [[name for name, v in label.items() if v] for label in labels] == [
        ["Cardiomegaly", "Nodule"], [], ["Pleural Effusion"]]  # fmt: skip
    with pytest.raises(Exception, match="--labels-from-prompt"):
        UtilityStudy(sets["real"], tmp_path / "generated.json", sets["test"], tmp_path / "runs")


def test_bootstrap_auc_matches_monai_and_pairs_the_protocols():
    rng = np.random.default_rng(0)
    scores, truth = np.round(rng.random(40), 1), rng.random(40) < 0.4  # ties, as rounded probabilities have
    assert weighted_roc_auc(scores, truth, np.ones((1, 40)))[0] == pytest.approx(float(compute_roc_auc(
        torch.tensor(scores), torch.tensor(truth.astype(float)))))  # fmt: skip
    draw = rng.integers(0, 40, 40)  # a bootstrap draw as counts is the AUC of the drawn images
    counts = np.bincount(draw, minlength=40)[None]
    assert weighted_roc_auc(scores, truth, counts)[0] == pytest.approx(
        roc_auc_per_label(scores[draw, None], truth[draw, None])[0])  # fmt: skip
    assert np.isnan(weighted_roc_auc(scores, truth, (~truth)[None].astype(float))[0])  # no positive drawn: no AUC
    labels = np.stack([truth, ~truth], axis=1)
    good = np.stack([labels + rng.normal(0, 0.3, labels.shape) for _ in range(3)])
    poor = np.stack([rng.random(labels.shape) for _ in range(3)])
    stats = bootstrap_auc({"real": poor, "mixed": good}, labels, ["a", "b"], num_samples=300)
    assert stats["mixed"]["mean_auc"]["low"] > stats["real"]["mean_auc"]["high"]
    assert stats["mixed"]["delta_vs_real"]["mean_auc"]["low"] > 0 and "delta_vs_real" not in stats["real"]
