# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The blinded reader study: statistics by hand; the frozen, hashed study definition and its private secrets; every
intruder refused; and the real page in headless Chromium, two readers through their own links, across a crash."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_xreal.cli.main import main
from monai_xreal.cli.reader_study import is_loopback
from monai_xreal.errors import XRealInputError
from monai_xreal.reader_study import ReaderStudyServer, StudyStore, cohen_kappa, reader_report, study_links
from monai_xreal.reader_study.server import DISPLAY_SIZE


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
    report = reader_report(answers, readers=3, images=4, study="ab" * 32)
    assert report["study"] == "ab" * 32 and report["answers"] == 6 and report["images"] == 4
    one, two, three = (report["per_reader"][r] for r in "123")
    assert one == {"answered": 4, "accuracy": 2 / 3, "sensitivity": 0.5, "specificity": 0.5, "unsure_rate": 0.25,
                   "mean_confidence": 3.5}  # fmt: skip
    assert two == {"answered": 2, "accuracy": 0.0, "sensitivity": 0.0, "specificity": 0.0, "unsure_rate": 0.0,
                   "mean_confidence": 2.0}  # fmt: skip
    assert three["answered"] == 0 and three["accuracy"] is None
    pair = report["agreement"]["pairs"]["1-2"]
    assert pair["images"] == 2 and pair["kappa"] == pytest.approx(cohen_kappa(["fake", "fake"], ["real", "fake"]))
    assert report["agreement"]["pairs"]["1-3"] == {"images": 0, "kappa": None}


@pytest.fixture()
def study_files(tmp_path):
    """Three real and three synthetic 40x32 PNGs and their datalists."""
    for kind in ("real", "synthetic"):
        items = []
        for i in range(3):
            pixels = np.random.default_rng(i + 10 * (kind == "real")).integers(0, 256, (40, 32), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / f"{kind}{i}.png")
            items.append({"image": f"{kind}{i}.png"})
        (tmp_path / f"{kind}.json").write_text(json.dumps({"training": items}))
    return tmp_path


def images_of(folder: Path) -> tuple[list[str], list[str]]:
    return ([str(folder / f"real{i}.png") for i in range(3)], [str(folder / f"synthetic{i}.png") for i in range(3)])


def test_store_keeps_first_answers_and_refuses_bad_ones(study_files):
    real, fake = images_of(study_files)
    store = StudyStore(study_files / "s.sqlite")
    assert store.setup(real, fake, readers=2, seed=3) is True  # a new study: links issued
    assert sorted(store.order(1)) == sorted(store.order(2)) == list(range(1, 7)) and store.order(1) != store.order(2)
    step = store.next_image(1)
    assert step["position"] == 1 and step["total"] == 6
    assert store.answer(1, step["token"], "fake", 3) is True
    assert store.answer(1, step["token"], "real") is False  # the first answer stands
    for args, argument in [((3, step["token"], "fake"), "reader"), ((1, step["token"], "maybe"), "answer"),
                           ((1, step["token"], "fake", 9), "confidence"), ((1, "nope", "fake"), "image"),
                           ((2, step["token"], "fake"), "image")]:  # fmt: skip  # reader 1's token is nothing to 2
        with pytest.raises(XRealInputError) as raised:
            store.answer(*args)
        assert raised.value.argument == argument
    keys = store.reader_keys(), store.owner_key()
    store.close()
    again = StudyStore(study_files / "s.sqlite")
    assert again.setup(list(reversed(real)), fake, readers=2, seed=3) is False  # the same study, continued
    assert (again.reader_keys(), again.owner_key()) == keys  # a restart keeps every link valid
    assert again.next_image(1)["position"] == 2 and again.answers()[0]["answer"] == "fake"
    assert again.image_for(1, step["token"])["id"] == again.answers()[0]["image"]
    with pytest.raises(XRealInputError, match="holds another study"):
        again.setup(real[:2], fake, readers=2, seed=3)
    again.close()
    again.secrets_path.unlink()  # revokes every link: the next start issues new ones
    third = StudyStore(study_files / "s.sqlite")
    assert third.setup(real, fake, readers=2, seed=3) is True and third.reader_for(keys[0][1]) is None
    assert third.reader_for(third.reader_keys()[2]) == 2 and third.image_for(1, step["token"]) is None
    third.close()


def test_study_is_frozen_hashed_and_its_secrets_private(study_files, capsys):
    real, fake = images_of(study_files)
    store = StudyStore(study_files / "s.sqlite")
    store.setup(real, fake, readers=2, seed=7)
    definition = json.loads(store.definition_path.read_text())
    assert store.study_id == hashlib.sha256(store.definition_path.read_bytes()).hexdigest()
    assert definition["seed"] == 7 and definition["readers"] == 2 and set(definition["orders"]) == {"1", "2"}
    for image in definition["images"]:
        assert image["sha256"] == hashlib.sha256(Path(image["path"]).read_bytes()).hexdigest()
        assert image["truth"] == ("real" if image["path"] in real else "fake")
    assert [store.order(r) for r in (1, 2)] == [definition["orders"][r] for r in "12"]
    assert stat.S_IMODE(store.secrets_path.stat().st_mode) == 0o600
    for private in (store.definition_path, store.path):  # they say which images are fake
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    secrets = json.loads(store.secrets_path.read_text())
    keys = [secrets["owner"], *secrets["readers"].values()]
    assert secrets["study"] == store.study_id and len(set(keys)) == 3 and min(map(len, keys)) >= 43
    first = {r: store.next_image(r)["token"] for r in (1, 2)}
    assert first[1] != first[2] and all(len(t) == 32 for t in first.values())
    assert store.image_for(2, first[1]) is None and store.image_for(1, first[1])["id"] == store.order(1)[0]
    store.close()

    # the CLI names the study and prints every link again on demand
    assert main(["reader-study", "--db", str(study_files / "s.sqlite"), "--show-links", "--port", "9000"]) == 0
    shown = capsys.readouterr().out
    assert store.study_id in shown and f"http://127.0.0.1:9000/?key={secrets['readers']['2']}" in shown
    assert f"http://127.0.0.1:9000/api/report?key={secrets['owner']}" in shown

    # one changed image (a pixel) and the study refuses to start, in one line (exit 2)
    pixels = np.asarray(Image.open(real[1])).copy()
    pixels[0, 0] ^= 1
    Image.fromarray(pixels).save(real[1])
    with pytest.raises(XRealInputError, match="changed since study") as raised:
        StudyStore(study_files / "s.sqlite").setup(real, fake, readers=2, seed=7)
    assert raised.value.argument == "study" and real[1] in str(raised.value)
    serve_args = ["reader-study", "--real", str(study_files / "real.json"), "--synthetic",
                  str(study_files / "synthetic.json"), "--readers", "2", "--seed", "7", "--port", str(free_port()),
                  "--db", str(study_files / "s.sqlite")]  # fmt: skip
    assert main(serve_args) == 2
    err = capsys.readouterr().err.strip()
    assert "changed since study" in err and len(err.splitlines()) == 1

    # an edited definition (the truth of one image flipped) is refused too, even for the report
    text = store.definition_path.read_text().replace('"truth": "real"', '"truth": "fake"', 1)
    store.definition_path.write_text(text)
    assert main(["reader-study", "--db", str(study_files / "s.sqlite"), "--report", str(study_files / "r")]) == 2
    assert "was changed after the study was created" in capsys.readouterr().err


# -- the server, in this process ----------------------------------------------------------------------------------


def request(port: int, path: str, key: str | None = None, body: dict | None = None, bearer: bool = False):
    """``(status, content)`` of one request; the key as ``?key=`` or as a bearer header; JSON content decoded."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if key is not None and bearer:
        headers["Authorization"] = f"Bearer {key}"
    elif key is not None:
        path += ("&" if "?" in path else "?") + f"key={key}"
    data = None if body is None else json.dumps(body).encode()
    call = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(call, timeout=10) as response:
            status, content, kind = response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as err:
        status, content, kind = err.code, err.read(), err.headers["Content-Type"]
    return status, (json.loads(content) if kind == "application/json" else content)


@pytest.mark.filterwarnings("ignore:.*nvImageCodec")
def test_intruders_are_refused_and_answers_are_bound_to_the_link(study_files):
    real, fake = images_of(study_files)
    store = StudyStore(study_files / "s.sqlite")
    store.setup(real, fake, readers=2, seed=1)
    server = ReaderStudyServer(store, ("127.0.0.1", 0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    a, b = store.reader_keys()[1], store.reader_keys()[2]
    owner = store.owner_key()
    try:
        token_a = request(port, "/api/next", a)[1]["token"]
        token_b = request(port, "/api/next", b, bearer=True)[1]["token"]
        status, page = request(port, "/", a)
        assert status == 200 and b"Reader 1" in page and a.encode() not in page
        assert request(port, f"/image/{token_a}.png", a, bearer=True)[0] == 200
        refused = [
            *[(path, None, None) for path in ("/", "/?reader=1", "/api/next?reader=2", f"/image/{token_a}.png",
                                              "/api/report", "/api/answers.csv", "/api/study.json")],
            ("/api/answer", None, {"reader": 1, "token": token_a, "answer": "real"}),  # no key
            ("/api/next", "x" * 43, None),  # a wrong key
            ("/api/answer", a[:-1] + ("A" if a[-1] != "A" else "B"), {"token": token_a, "answer": "real"}),
            ("/api/report", a, None),  # a reader is not the owner
            ("/api/answers.csv", b, None),
            ("/api/next", owner, None),  # nor the owner a reader
            ("/api/answer", a, {"token": token_b, "answer": "fake"}),  # A answering B's image
            (f"/image/{token_b}.png", a, None),  # A looking at B's image
            ("/api/answer", a, {"token": "0" * 32, "answer": "fake"}),  # a guessed image token
            ("/image/" + "0" * 32 + ".png", a, None),
        ]  # fmt: skip
        for path, key, body in refused:
            status, error = request(port, path, key, body)
            assert status == 403 and set(error) == {"error"} and "Traceback" not in error["error"], (path, key)
        # the key, never the body, says whose answer it is
        assert request(port, "/api/answer", a, {"reader": 2, "token": token_a, "answer": "fake", "confidence": 4}) \
            == (200, {"saved": True})  # fmt: skip
        assert request(port, "/api/answer", b, {"token": token_b, "answer": "real"}, bearer=True) == (
            200,
            {"saved": True},
        )
        assert request(port, "/api/answer", b, {"token": token_b, "answer": "fake"}) == (200, {"saved": False})
        assert request(port, "/api/answer", b, {"token": token_a, "answer": "fake"})[0] == 403
        assert request(port, "/api/answer", a, {"token": token_a, "answer": "maybe"})[0] == 400

        status, report = request(port, "/api/report", owner, bearer=True)
        assert status == 200 and report["study"] == store.study_id and report["answers"] == 2
        assert [report["per_reader"][r]["answered"] for r in "12"] == [1, 1]
        status, table = request(port, "/api/answers.csv", owner)
        rows = list(csv.DictReader(io.StringIO(table.decode())))
        assert status == 200 and [(r["reader"], r["answer"], r["confidence"]) for r in rows] == [("1", "fake", "4"),
                                                                                                ("2", "real", "")]  # fmt: skip
        assert {r["study"] for r in rows} == {store.study_id}
        assert request(port, "/api/study.json", owner)[1] == json.loads(store.definition_path.read_text())
        ids = store.image_for(1, token_a)["id"], store.image_for(2, token_b)["id"]
    finally:
        server.shutdown()
        server.server_close()
        store.close()
    again = StudyStore(study_files / "s.sqlite")
    assert [(x["reader"], x["image"]) for x in again.answers()] == [(1, ids[0]), (2, ids[1])]
    again.close()


def test_reader_study_refuses_bad_options_in_one_line(study_files, tmp_path, capsys):
    (tmp_path / "broken.json").write_text(json.dumps({"training": [{"image": "absent.png"}]}))
    cases = [
        (["--real", str(study_files / "real.json")], "--real and --synthetic"),
        (["--real", str(tmp_path / "broken.json"), "--synthetic", str(study_files / "synthetic.json")],
         "missing image"),
        (["--db", str(tmp_path / "none.sqlite"), "--report", str(tmp_path / "r")], "no such study file"),
        (["--db", str(tmp_path / "none.sqlite"), "--show-links"], "no such study file"),
        (["--real", str(study_files / "real.json"), "--synthetic", str(study_files / "synthetic.json"),
          "--readers", "0", "--db", str(tmp_path / "x.sqlite")], "readers: must be a positive integer"),
    ]  # fmt: skip
    for args, reason in cases:
        assert main(["reader-study", *args]) == 2
        err = capsys.readouterr().err
        assert reason in err and len(err.strip().splitlines()) == 1
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("reader.example.org")


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


def serve(folder: Path, port: int) -> tuple[subprocess.Popen, list[str]]:
    """The command, serving 2 readers on ``port``, once it has printed its start lines (which it goes on adding to)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "monai_xreal", "reader-study", "--real", str(folder / "real.json"), "--synthetic",
         str(folder / "synthetic.json"), "--readers", "2", "--port", str(port), "--db", str(folder / "study.sqlite")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, text=True,
    )  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    wait_for(lambda: any("owner's answers" in x or x.startswith("links:") for x in lines) or process.poll() is not None,
             timeout=60)  # fmt: skip
    assert process.poll() is None, "".join(lines)
    return process, lines


def answer_in_page(driver, keys: str) -> str:
    """Press ``keys`` (confidence digits, then r / f / u) on the shown image; returns the image's token."""
    from selenium.webdriver.common.by import By

    wait_for(lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready")
    token = driver.find_element(By.TAG_NAME, "body").get_attribute("data-token")
    assert (
        driver.execute_script("return document.getElementById('image').naturalWidth") == DISPLAY_SIZE
    )  # one size for all
    body = driver.find_element(By.TAG_NAME, "body")
    for key in keys:
        body.send_keys(key)
    wait_for(lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-token") != token
             or driver.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done")  # fmt: skip
    return token


def test_two_readers_answer_through_their_links_an_intruder_gets_nothing_and_a_crash_loses_nothing(study_files):
    from selenium.webdriver.common.by import By

    port = free_port()
    server, printed = serve(study_files, port)
    links = {line.split(": ", 1)[0].strip(): line.split(": ", 1)[1].strip() for line in printed if ": http" in line}
    key = {r: links[f"reader {r}"].split("?key=")[1] for r in (1, 2)}
    owner = links["owner's report"].split("?key=")[1]
    assert links["reader 1"] == f"http://127.0.0.1:{port}/?key={key[1]}" and key[1] != key[2] != owner
    driver = browser()
    given = {}  # (reader, token) -> (answer, confidence)
    try:
        driver.get(links["reader 1"])
        assert driver.find_element(By.ID, "reader").text == "Reader 1"
        for keys, answer, confidence in [("4f", "fake", 4), ("r", "real", None), ("2u", "unsure", 2)]:
            given[(1, answer_in_page(driver, keys))] = (answer, confidence)
        driver.get(links["reader 2"])
        assert driver.find_element(By.ID, "reader").text == "Reader 2"
        for keys, answer, confidence in [("f", "fake", None), ("5r", "real", 5)]:
            given[(2, answer_in_page(driver, keys))] = (answer, confidence)
        token_of_2 = next(t for r, t in given if r == 2)

        # the intruder: yesterday's reader-number link, a guessed key, reader 1's key on reader 2's image, the report
        for url in (f"http://127.0.0.1:{port}/?reader=1", f"http://127.0.0.1:{port}/?key={key[1][::-1]}",
                    f"http://127.0.0.1:{port}/api/report"):  # fmt: skip
            driver.get(url)
            assert "by invitation" in driver.page_source or "owner's key" in driver.page_source
            assert not driver.find_elements(By.ID, "image")
        assert request(port, "/api/answer", key[1], {"reader": 2, "token": token_of_2, "answer": "real"})[0] == 403
        assert request(port, f"/image/{token_of_2}.png", key[1])[0] == 403
        assert request(port, "/api/report", key[2])[0] == 403

        os.killpg(server.pid, signal.SIGKILL)  # a crash: no shutdown, no flush
        server.wait()
        server, printed = serve(study_files, port)
        assert not any(k in "".join(printed) for k in (*key.values(), owner))  # links are printed once, at creation
        driver.get(links["reader 1"])  # the same link still works: reader 1 resumes at their fourth image
        wait_for(lambda: driver.find_element(By.ID, "progress").text == "Image 4 of 6")
        given[(1, answer_in_page(driver, "3f"))] = ("fake", 3)
        status, report = request(port, "/api/report", owner)
    finally:
        driver.quit()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()

    store = StudyStore(study_files / "study.sqlite")
    image = {(r, t): store.image_for(r, t) for r, t in given}
    stored = {(a["reader"], a["image"]): (a["answer"], a["confidence"]) for a in store.answers()}
    assert stored == {(r, image[(r, t)]["id"]): v for (r, t), v in given.items()}  # every answer, exactly as given
    rows = [{"reader": r, "image": image[(r, t)]["id"], "truth": image[(r, t)]["truth"], "answer": a,
             "confidence": c} for (r, t), (a, c) in given.items()]  # fmt: skip
    assert status == 200 and report == json.loads(json.dumps(reader_report(rows, 2, 6, study=store.study_id)))
    assert report["per_reader"]["1"]["answered"] == 4 and report["per_reader"]["2"]["answered"] == 2
    assert report["answers"] == 6 and report["study"] == hashlib.sha256(store.definition_path.read_bytes()).hexdigest()
    assert study_links(store, f"http://127.0.0.1:{port}")["readers"] == {r: links[f"reader {r}"] for r in (1, 2)}
    store.close()

    assert main(["reader-study", "--db", str(study_files / "study.sqlite"), "--report", str(study_files / "rep")]) == 0
    assert json.loads((study_files / "rep" / "reader_study.json").read_text()) == report
    table = list(csv.DictReader((study_files / "rep" / "answers.csv").open()))
    assert len(table) == 6 and {r["study"] for r in table} == {report["study"]}
    chart = np.asarray(Image.open(study_files / "rep" / "reader_study.png"))
    assert chart.ndim == 3 and chart.shape[0] > 60 and chart.std() > 0
