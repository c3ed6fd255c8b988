# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The blinded reader study: statistics by hand, and the real page in headless Chromium across a server crash."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_xreal.errors import XRealInputError
from monai_xreal.reader_study import StudyStore, cohen_kappa, reader_report


def test_cohen_kappa_by_hand():
    # 10 items: agree on 7 (4 fake, 3 real); p_o = 0.7; marginals a: 6 fake 4 real, b: 5 fake 5 real
    a = ["fake"] * 4 + ["real"] * 3 + ["fake", "fake", "real"]
    b = ["fake"] * 4 + ["real"] * 3 + ["real", "real", "fake"]
    expected = 0.6 * 0.5 + 0.4 * 0.5
    assert cohen_kappa(a, b) == pytest.approx((0.7 - expected) / (1 - expected))
    assert cohen_kappa(a, a) == 1.0 and cohen_kappa(["unsure"] * 3, ["unsure"] * 3) == 1.0
    assert cohen_kappa([], []) is None
    with pytest.raises(ValueError):
        cohen_kappa(["real"], [])


def test_report_rates_per_reader():
    answers = [
        {"reader": 1, "image": 1, "truth": "fake", "answer": "fake", "confidence": 5},
        {"reader": 1, "image": 2, "truth": "fake", "answer": "unsure", "confidence": None},
        {"reader": 1, "image": 3, "truth": "real", "answer": "fake", "confidence": 2},
        {"reader": 1, "image": 4, "truth": "real", "answer": "real", "confidence": None},
        {"reader": 2, "image": 1, "truth": "fake", "answer": "real", "confidence": 1},
        {"reader": 2, "image": 3, "truth": "real", "answer": "fake", "confidence": 3},
    ]
    report = reader_report(answers, readers=3, images=4)
    one, two, three = (report["per_reader"][r] for r in "123")
    assert one == {"answered": 4, "accuracy": 2 / 3, "sensitivity": 0.5, "specificity": 0.5, "unsure_rate": 0.25,
                   "mean_confidence": 3.5}  # fmt: skip
    assert two == {"answered": 2, "accuracy": 0.0, "sensitivity": 0.0, "specificity": 0.0, "unsure_rate": 0.0,
                   "mean_confidence": 2.0}  # fmt: skip
    assert three["answered"] == 0 and three["accuracy"] is None
    pair = report["agreement"]["pairs"]["1-2"]
    assert pair["images"] == 2 and pair["kappa"] == pytest.approx(cohen_kappa(["fake", "fake"], ["real", "fake"]))
    assert report["agreement"]["pairs"]["1-3"] == {"images": 0, "kappa": None}


def test_store_keeps_first_answers_and_refuses_bad_ones(tmp_path):
    store = StudyStore(tmp_path / "s.sqlite")
    store.setup(["r1", "r2"], ["f1"], readers=2, seed=3)
    assert sorted(store.order(1)) == sorted(store.order(2)) == [1, 2, 3] and store.order(2) == store.order(2)
    step = store.next_image(1)
    assert step["position"] == 1 and step["total"] == 3
    assert store.answer(1, step["token"], "fake", 3) is True
    assert store.answer(1, step["token"], "real") is False  # the first answer stands
    for args, argument in [((3, step["token"], "fake"), "reader"), ((1, step["token"], "maybe"), "answer"),
                           ((1, step["token"], "fake", 9), "confidence"), ((1, "nope", "fake"), "token")]:  # fmt: skip
        with pytest.raises(XRealInputError) as raised:
            store.answer(*args)
        assert raised.value.argument == argument
    store.close()
    again = StudyStore(tmp_path / "s.sqlite")
    again.setup(["r2", "r1"], ["f1"], readers=2, seed=3)  # the same study, continued
    assert again.next_image(1)["position"] == 2 and again.answers()[0]["answer"] == "fake"
    with pytest.raises(XRealInputError, match="holds another study"):
        again.setup(["r1"], ["f1"], readers=2, seed=3)


# -- the page, in a browser -------------------------------------------------------------------------------------


def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail("the reader-study test needs Debian's chromium and chromium-driver (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def wait_for(condition, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture()
def study_files(tmp_path):
    for kind in ("real", "synthetic"):
        items = []
        for i in range(3):
            pixels = np.random.default_rng(i + 10 * (kind == "real")).integers(0, 256, (40, 32), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / f"{kind}{i}.png")
            items.append({"image": f"{kind}{i}.png"})
        (tmp_path / f"{kind}.json").write_text(json.dumps({"training": items}))
    return tmp_path


def serve(folder: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "monai_xreal", "reader-study", "--real", str(folder / "real.json"), "--synthetic",
         str(folder / "synthetic.json"), "--readers", "2", "--port", str(port), "--db", str(folder / "study.sqlite")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    wait_for(lambda: _answers_http(port) or process.poll() is not None, timeout=60)
    assert process.poll() is None, process.stdout.read().decode()
    return process


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _answers_http(port: int) -> bool:
    try:
        return "per_reader" in get_json(f"http://127.0.0.1:{port}/api/report")
    except (urllib.error.URLError, ConnectionError):
        return False


def answer_in_page(driver, keys: str) -> str:
    """Press ``keys`` (confidence digits, then r / f / u) on the shown image; returns the image's token."""
    from selenium.webdriver.common.by import By

    wait_for(lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready")
    token = driver.find_element(By.TAG_NAME, "body").get_attribute("data-token")
    assert driver.execute_script("return document.getElementById('image').naturalWidth") == 32
    body = driver.find_element(By.TAG_NAME, "body")
    for key in keys:
        body.send_keys(key)
    wait_for(lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-token") != token
             or driver.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done")  # fmt: skip
    return token


def test_readers_answer_in_the_browser_and_nothing_is_lost_in_a_crash(study_files):
    from selenium.webdriver.common.by import By

    port = free_port()
    server = serve(study_files, port)
    driver = browser()
    given = {}  # (reader, token) -> (answer, confidence)
    try:
        driver.get(f"http://127.0.0.1:{port}/?reader=1")
        for keys, answer, confidence in [("4f", "fake", 4), ("r", "real", None), ("2u", "unsure", 2)]:
            given[(1, answer_in_page(driver, keys))] = (answer, confidence)
        driver.get(f"http://127.0.0.1:{port}/")  # reader 2 picks their number on the start page
        driver.find_element(By.ID, "reader").send_keys("Reader 2")
        driver.find_element(By.ID, "start").click()
        for keys, answer, confidence in [("f", "fake", None), ("5r", "real", 5)]:
            given[(2, answer_in_page(driver, keys))] = (answer, confidence)

        os.killpg(server.pid, signal.SIGKILL)  # a crash: no shutdown, no flush
        server.wait()
        server = serve(study_files, port)
        driver.get(f"http://127.0.0.1:{port}/?reader=1")  # reader 1 resumes at their fourth image
        wait_for(lambda: driver.find_element(By.ID, "progress").text == "Image 4 of 6")
        given[(1, answer_in_page(driver, "3f"))] = ("fake", 3)
        report = get_json(f"http://127.0.0.1:{port}/api/report")
    finally:
        driver.quit()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()

    with sqlite3.connect(study_files / "study.sqlite") as db:
        truth = dict(db.execute("SELECT token, truth FROM images"))
        query = "SELECT a.reader, i.token, a.answer, a.confidence FROM answers a JOIN images i ON a.image_id = i.id"
        stored = {(r, t): (a, c) for r, t, a, c in db.execute(query)}
    assert stored == given  # every answer survived the crash, exactly as given
    rows = [
        {"reader": r, "image": t, "truth": truth[t], "answer": a, "confidence": c} for (r, t), (a, c) in given.items()
    ]
    assert report == json.loads(json.dumps(reader_report(rows, readers=2, images=6)))
    assert report["per_reader"]["1"]["answered"] == 4 and report["per_reader"]["2"]["answered"] == 2

    command = [sys.executable, "-m", "monai_xreal", "reader-study", "--db", str(study_files / "study.sqlite"),
               "--report", str(study_files / "report")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads((study_files / "report" / "reader_study.json").read_text()) == report
    chart = np.asarray(Image.open(study_files / "report" / "reader_study.png"))
    assert chart.ndim == 3 and chart.shape[0] > 60 and chart.std() > 0


def test_reader_study_refuses_bad_options_in_one_line(study_files, tmp_path):
    def study(*args):
        return subprocess.run([sys.executable, "-m", "monai_xreal", "reader-study", *args],
                              capture_output=True, text=True, check=False)  # fmt: skip

    (tmp_path / "broken.json").write_text(json.dumps({"training": [{"image": "absent.png"}]}))
    cases = [
        (["--real", str(study_files / "real.json")], "--real and --synthetic"),
        (["--real", str(tmp_path / "broken.json"), "--synthetic", str(study_files / "synthetic.json")],
         "missing image"),
        (["--db", str(tmp_path / "none.sqlite"), "--report", str(tmp_path / "r")], "no such study file"),
        (["--real", str(study_files / "real.json"), "--synthetic", str(study_files / "synthetic.json"),
          "--readers", "0", "--db", str(tmp_path / "x.sqlite")], "readers: must be a positive integer"),
    ]  # fmt: skip
    for args, reason in cases:
        done = study(*args)
        assert done.returncode == 2 and reason in done.stderr and len(done.stderr.strip().splitlines()) == 1
