# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``generate-dataset``: the same dataset with one or two gloo processes, after a SIGKILL and a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import save_mask
from monai.data import load_decathlon_datalist
from test_provenance import dciodvfy

from monai_xreal.data import draw_anatomy, draw_box

SAMPLES = 3  # per condition; with --batch-size 2, units of 2 and 1 samples


@pytest.fixture(scope="module")
def conditions(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("conditions")
    entries = []
    for i in range(4):
        anatomy = save_mask(draw_anatomy((32 + 8 * i, 32)), folder, f"anatomy{i}")
        entry = {"id": f"case.{i}", "anatomy": anatomy.name, "prompt": ["", "Edema", "Pneumothorax", "Ödem"][i]}
        if i % 2:
            entry["pathology"] = save_mask(draw_box((32 + 8 * i, 32), (0.2, 0.5, 0.45, 0.8)), folder, f"box{i}").name
        entries.append(entry)
    (folder / "conditions.json").write_text(json.dumps({"conditions": entries}), encoding="utf-8")
    return folder / "conditions.json"


def command(tiny_bundle, conditions, out, *extra, processes: int = 1) -> list[str]:
    launcher = [sys.executable, "-m", "monai_xreal"]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                    "--standalone", "-m", "monai_xreal"]  # fmt: skip
    return [*launcher, "generate-dataset", "--bundle", str(tiny_bundle), "--conditions", str(conditions),
            "--samples-per-condition", str(SAMPLES), "--batch-size", "2", "--num-inference-steps", "3",
            "--output-dir", str(out), *extra]  # fmt: skip


def run(args: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def tree(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, but the dataset's own identity (UID root, date) in dataset.json."""
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    info = json.loads(files.pop("dataset.json"))
    assert len(info.pop("uid_root")) == 32 and info.pop("created")
    files["dataset.json"] = json.dumps(info, sort_keys=True).encode()
    return files


@pytest.fixture(scope="module")
def uninterrupted(tiny_bundle, conditions, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "dataset"
    run(command(tiny_bundle, conditions, out))
    return out


def test_dataset_layout_manifest_and_datalist(uninterrupted, conditions):
    lines = (uninterrupted / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in lines]
    assert [(e["condition_id"], e["sample_index"]) for e in entries] == [
        (f"case.{i}", k) for i in range(4) for k in range(SAMPLES)
    ]
    assert len({e["seed"] for e in entries}) == len(entries)
    for entry in entries:
        sidecar = json.loads((uninterrupted / entry["file"]).with_suffix(".json").read_text(encoding="utf-8"))
        assert sidecar["sampling"]["seed"] == entry["seed"] and sidecar["output"]["sha256"] == entry["sha256"]
        assert sidecar["dataset"] == {"condition_id": entry["condition_id"], "sample_index": entry["sample_index"]}
    datalist = load_decathlon_datalist(str(uninterrupted / "datalist.json"), data_list_key="training")
    assert len(datalist) == 4 * SAMPLES and datalist[3]["prompt"] == "Edema" and "pathology" in datalist[3]
    for item in datalist:
        assert Path(item["image"]).is_file() and Path(item["anatomy"]).is_file()
        assert Path(item["image"]).resolve().is_relative_to(uninterrupted.resolve())
    # replaying a sample from the dataset (its masks are the dataset's copies, found relative to the sidecar)
    done = run([sys.executable, "-m", "monai_xreal", "generate", "--from-provenance",
                str(uninterrupted / "images" / "case.1" / "case.1_s00002.json"), "--output-dir",
                str(uninterrupted.parent / "replay")])  # fmt: skip
    assert "bit for bit" in done.stdout
    assert (uninterrupted.parent / "replay" / "case.1_s00002.png").read_bytes() == (
        uninterrupted / "images" / "case.1" / "case.1_s00002.png"
    ).read_bytes()
    # the replay's own record points at the same masks from its new place, and can be replayed in turn
    replayed = json.loads((uninterrupted.parent / "replay" / "case.1_s00002.json").read_text(encoding="utf-8"))
    assert Path(replayed["anatomy"]["file"]) == (uninterrupted / "conditions" / "case.1" / "anatomy.png").resolve()
    assert replayed["dataset"] == {"condition_id": "case.1", "sample_index": 2}
    again = run([sys.executable, "-m", "monai_xreal", "generate", "--from-provenance",
                 str(uninterrupted.parent / "replay" / "case.1_s00002.json"), "--output-dir",
                 str(uninterrupted.parent / "replay2")])  # fmt: skip
    assert "bit for bit" in again.stdout


def test_two_gloo_processes_make_the_same_dataset(tiny_bundle, conditions, uninterrupted, tmp_path):
    out = tmp_path / "dataset"
    run(command(tiny_bundle, conditions, out, processes=2))
    assert tree(out) == tree(uninterrupted)


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # it has just exited
        return b""


def test_killed_run_restarts_to_the_uninterrupted_result(tiny_bundle, conditions, uninterrupted, tmp_path):
    out = tmp_path / "dataset"
    args = command(tiny_bundle, conditions, out, processes=2)
    launcher = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    manifest = out / "manifest.jsonl"
    deadline = time.monotonic() + 300
    while not (manifest.is_file() and manifest.read_bytes().count(b"\n") >= 1):
        assert launcher.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.005)
    # torchrun's workers are the launcher's own children (their children, if any, are not workers)
    workers = [c for c in children(launcher.pid) if b"generate-dataset" in cmdline(c)]
    assert len(workers) == 2, workers
    os.kill(workers[-1], signal.SIGKILL)  # one worker dies mid-run; torchrun stops the other
    assert launcher.wait(timeout=120) != 0
    written = manifest.read_bytes().count(b"\n")
    assert 1 <= written < 4 * SAMPLES, "the kill came too late to test a restart"

    # what else a kill can leave: an image cut short, a journal line cut short, a half-made file folder
    first = json.loads(manifest.read_text().splitlines()[0])
    damaged = out / first["file"]
    damaged.write_bytes(damaged.read_bytes()[:20])
    with manifest.open("a") as f:
        f.write('{"condition_id": "case.0", "sample_in')
    (out / "images" / "case.0" / ".partial-killed").mkdir(parents=True, exist_ok=True)
    (out / "images" / "case.0" / ".partial-killed" / "case.0_s00001.png").write_bytes(b"\x89PNG")

    done = run(command(tiny_bundle, conditions, out))
    assert "found finished" in done.stdout
    assert tree(out) == tree(uninterrupted)  # no duplicates, no missing samples, no leftovers


def test_restart_refuses_other_settings_and_skips_finished_work(tiny_bundle, conditions, uninterrupted, tmp_path):
    out = tmp_path / "dataset"
    run(command(tiny_bundle, conditions, out))
    before = tree(out)
    again = run(command(tiny_bundle, conditions, out))
    assert f"0 made by rank 0 now, {4 * SAMPLES} found finished" in again.stdout and tree(out) == before
    args = command(tiny_bundle, conditions, out)
    args[args.index("--num-inference-steps") + 1] = "4"
    refused = subprocess.run(args, capture_output=True, text=True, check=False)
    assert refused.returncode == 2 and "made with other settings (sampling)" in refused.stderr
    errors = [line for line in refused.stderr.strip().splitlines() if ": warning: " not in line]  # 40x32 maps: warned
    assert len(errors) == 1 and tree(out) == before


def test_dicom_dataset_files_are_valid_and_filed_by_condition(tiny_bundle, conditions, tmp_path):
    import pydicom

    out = tmp_path / "dataset"
    run(command(tiny_bundle, conditions, out, "--format", "dcm", "--patient-id", "SYNTH-TRIAL"))
    files = sorted(out.rglob("*.dcm"))
    assert len(files) == 4 * SAMPLES
    dciodvfy(files[0])
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert len({d.StudyInstanceUID for d in datasets}) == 1
    assert len({d.SeriesInstanceUID for d in datasets}) == 4 and len({d.SOPInstanceUID for d in datasets}) == 12
    assert {d.PatientID for d in datasets} == {"SYNTH-TRIAL"} and {d.ConversionType for d in datasets} == {"SYN"}


def test_work_units_are_planned_lazily_and_split_by_rank():
    """A billion samples per condition plan in constant memory; the ranks' units partition the work, in order."""
    import types

    from monai_xreal.synthesis.dataset import WorkUnit, plan_units

    huge = plan_units(3, 10**9, 4, rank=1, world_size=2)
    assert isinstance(huge, types.GeneratorType)
    assert next(huge) == WorkUnit(0, (4, 5, 6, 7)) and next(huge) == WorkUnit(0, (12, 13, 14, 15))
    every = list(plan_units(2, 5, 2))
    assert every == [WorkUnit(c, s) for c in (0, 1) for s in ((0, 1), (2, 3), (4,))]
    ranks = [list(plan_units(2, 5, 2, rank=r, world_size=3)) for r in range(3)]
    assert sorted(sum(ranks, []), key=every.index) == every and not set(ranks[0]) & set(ranks[1])


def test_balanced_demographics_make_every_group_equally(tiny_bundle, tmp_path):
    folder = tmp_path / "conditions"
    folder.mkdir()
    anatomy = save_mask(draw_anatomy((32, 32)), folder, "anatomy")
    entries = [{"id": "c", "anatomy": anatomy.name, "prompt": "Cardiomegaly", "demographics": {"view": "AP"}}]
    (folder / "conditions.json").write_text(json.dumps({"conditions": entries}))
    out = tmp_path / "dataset"
    run([sys.executable, "-m", "monai_xreal", "generate-dataset", "--bundle", str(tiny_bundle), "--conditions",
         str(folder / "conditions.json"), "--samples-per-condition", "2", "--num-inference-steps", "2",
         "--output-dir", str(out), "--balance-demographics", "sex,age_group"])  # fmt: skip
    items = json.loads((out / "datalist.json").read_text())["training"]
    assert len(items) == 2 * 2 * 5  # 2 sexes x 5 age groups, 2 images each
    groups = {}
    for item in items:
        d = item["demographics"]
        assert d["view"] == "AP" and item["prompt"] == "Cardiomegaly"  # the condition's own values are kept
        groups.setdefault((d["sex"], d["age"]), []).append(item)
        record = json.loads((out / item["image"]).with_suffix(".json").read_text())
        assert record["demographics"] == d and record["prompt"].endswith("AP view. Cardiomegaly")
        assert record["prompt"].startswith(f"{d['age']} year old {d['sex']}")
    assert len(groups) == 10 and {len(v) for v in groups.values()} == {2}
    assert json.loads((out / "dataset.json").read_text())["balance_demographics"] == ["sex", "age_group"]


def test_a_conditions_bad_demographics_are_named(tmp_path):
    from monai_xreal.data import load_conditions
    from monai_xreal.errors import XRealInputError

    (tmp_path / "c.json").write_text(json.dumps({"conditions": [{"prompt": "x", "demographics": {"age": 300}}]}))
    with pytest.raises(XRealInputError, match=r"conditions\[0\]\.demographics\.age: must be in \[0, 120\]"):
        load_conditions(tmp_path / "c.json")
