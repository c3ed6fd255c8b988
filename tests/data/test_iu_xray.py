# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
import io
import logging
import tarfile
import time
from collections import Counter

import pytest

from monai_xreal import XRealInputError
from monai_xreal.data.iu_xray import iu_xray_datalist, iu_xray_report
from monai_xreal.data.packaged import torchxrayvision_file

# the real element structure of ecgen-radiology/<n>.xml, trimmed of the elements the adapter does not read
XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR{n}"/>
   <IUXRId id="{n}"/>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <Abstract>
            <AbstractText Label="COMPARISON">None.</AbstractText>
            <AbstractText Label="INDICATION">XXXX-year-old male, chest pain.</AbstractText>
            <AbstractText Label="FINDINGS">{findings}</AbstractText>
            <AbstractText Label="IMPRESSION">{impression}</AbstractText>
         </Abstract>
      </Article>
   </MedlineCitation>
   <MeSH>
      {mesh}
      <automatic>calcified granuloma</automatic>
   </MeSH>
   {images}
</eCitation>
"""
IMAGE = """<parentImage id="{id}">
      <figureId>F1</figureId>
      <caption>Xray Chest PA and Lateral</caption>
      <panel type="single"><url>/hadoop/storage/radiology/extract/{id}.jpg</url><imgModality>7</imgModality></panel>
   </parentImage>"""


def make_xml(n: int, findings: str, impression: str, mesh: list[str], images: list[str]) -> str:
    return XML.format(
        n=n, findings=findings, impression=impression, mesh="\n      ".join(f"<major>{m}</major>" for m in mesh),
        images="\n   ".join(IMAGE.format(id=i) for i in images),
    )  # fmt: skip


REPORTS = {
    "1": make_xml(1, "The heart is normal.\n   No effusion.", "Normal chest x-XXXX.", ["normal"],
                  ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]),
    "2": make_xml(2, "", "Stable granuloma.", ["Calcified Granuloma/lung/upper lobe/right", "Spine/degenerative"],
                  ["CXR2_IM-0652-1001"]),
    "10": make_xml(10, "Clear lungs.", "No acute disease.", ["normal"], []),  # a report naming no image
}  # fmt: skip


def write_tgz(path, files: dict[str, str]):
    with tarfile.open(path, "w:gz") as archive:
        folder = tarfile.TarInfo("ecgen-radiology")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        for name in sorted(files):  # the real archive lists 1, 10, 2, ...
            data = files[name].encode()
            info = tarfile.TarInfo(f"ecgen-radiology/{name}.xml")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_one_report_parsed():
    entry = iu_xray_report(REPORTS["2"])
    assert entry["report_id"] == "CXR2" and entry["images"] == ["CXR2_IM-0652-1001"]
    assert entry["report"] == {
        "findings": "", "impression": "Stable granuloma.", "comparison": "None.",
        "indication": "XXXX-year-old male, chest pain.",
    }  # fmt: skip
    assert entry["mesh"] == ["Calcified Granuloma/lung/upper lobe/right", "Spine/degenerative"]


@pytest.mark.parametrize("as_folder", [False, True])
def test_datalist_from_a_test_made_archive_or_folder(tmp_path, as_folder, caplog):
    if as_folder:
        reports = tmp_path / "ecgen-radiology"
        reports.mkdir()
        for name, text in REPORTS.items():
            (reports / f"{name}.xml").write_text(text)
    else:
        reports = write_tgz(tmp_path / "NLMCXR_reports.tgz", REPORTS)
    with caplog.at_level(logging.INFO):
        items = iu_xray_datalist(reports)
    assert [i["id"] for i in items] == ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001", "CXR2_IM-0652-1001"]
    assert [i["report_id"] for i in items] == ["CXR1", "CXR1", "CXR2"]
    assert items[0]["report"]["findings"] == "The heart is normal. No effusion."
    assert items[1]["report"]["impression"] == "Normal chest x-XXXX." and items[1]["mesh"] == ["normal"]
    assert items[0]["report"] is not items[1]["report"]  # copies: a transform may edit one image's report
    assert "image" not in items[0] and "left out 1 report(s) that name no image" in caplog.text
    with_imageless = iu_xray_datalist(reports, keep_imageless=True)
    assert [i["id"] for i in with_imageless] == [i["id"] for i in items] + ["CXR10"]
    assert with_imageless[-1]["report"]["impression"] == "No acute disease." and "image" not in with_imageless[-1]


def test_image_paths_and_missing_images(tmp_path, caplog):
    reports = write_tgz(tmp_path / "reports.tgz", REPORTS)
    images = tmp_path / "png"
    images.mkdir()
    for name in ("CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"):
        (images / f"{name}.png").write_bytes(b"")
    with pytest.raises(XRealInputError, match="CXR2_IM-0652-1001: no image file"):
        iu_xray_datalist(reports, image_dir=images)
    with caplog.at_level(logging.WARNING):
        items = iu_xray_datalist(reports, image_dir=images, skip_invalid=True)
    assert [i["image"] for i in items] == [str(images / f"CXR1_1_IM-0001-{n}.png") for n in (3001, 4001)]
    assert "skipped 1 bad row(s)" in caplog.text


def test_malformed_xml_names_the_file_or_is_skipped(tmp_path, caplog):
    broken = {**REPORTS, "7": REPORTS["2"].replace("</Abstract>", "")}
    reports = write_tgz(tmp_path / "reports.tgz", broken)
    with pytest.raises(XRealInputError, match=r"reports\.tgz:ecgen-radiology/7\.xml: malformed XML"):
        iu_xray_datalist(reports)
    with caplog.at_level(logging.WARNING):
        assert len(iu_xray_datalist(reports, skip_invalid=True)) == 3
    assert "skipped 1 bad row(s)" in caplog.text
    folder = tmp_path / "xml"
    folder.mkdir()
    (folder / "3.xml").write_text(REPORTS["1"].replace('parentImage id="CXR1_1_IM-0001-4001"', "parentImage"))
    with pytest.raises(XRealInputError, match=r"3\.xml: a parentImage element has no id"):
        iu_xray_datalist(folder)
    (tmp_path / "not.tgz").write_bytes(b"not a tar")
    with pytest.raises(XRealInputError, match="not a readable tar archive"):
        iu_xray_datalist(tmp_path / "not.tgz")
    with pytest.raises(XRealInputError, match="no such file"):
        iu_xray_datalist(tmp_path / "absent.tgz")


# -- the real NLMCXR_reports.tgz shipped in torchxrayvision's wheel ---------------------------------------------


def test_real_iu_reports():
    start = time.perf_counter()
    items = iu_xray_datalist(torchxrayvision_file("iu_reports"), keep_imageless=True)
    assert time.perf_counter() - start < 5.0  # streamed, ~0.5 s
    reports: dict[str, dict] = {}
    for item in items:
        reports.setdefault(item["report_id"], item)  # a report's first image
    images = [i for i in items if i["id"] != i["report_id"]]
    assert len(reports) == 3955 and len(images) == 7470 and len(items) - len(images) == 104
    assert Counter(Counter(i["report_id"] for i in images).values()) == {2: 3208, 1: 446, 3: 181, 4: 15, 5: 1}
    first = reports["CXR1"]
    assert first["id"] == "CXR1_1_IM-0001-3001" and first["mesh"] == ["normal"]
    assert first["report"]["impression"] == "Normal chest x-XXXX."
    assert first["report"]["indication"] == "Positive TB test"
    assert first["report"]["findings"].startswith("The cardiac silhouette and mediastinum size are within normal")
    assert reports["CXR10"]["mesh"] == ["Calcified Granuloma/lung/upper lobe/right"]
    assert reports["CXR10"]["report"]["impression"] == "No acute cardiopulmonary process."
    # every report has all four labelled sections; findings are empty in 530 of them, impressions in 34
    assert sum(not r["report"]["findings"] for r in reports.values()) == 530
    assert sum(not r["report"]["impression"] for r in reports.values()) == 34
    assert sum(r["mesh"] == ["normal"] for r in reports.values()) == 1391
