# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""DICOM UIDs: random ``2.25`` UIDs without entropy, the same UID for the same entropy (a resumed dataset run)."""

from pydicom.uid import UID

from monai_xreal.io.dicom import dicom_uid


def test_random_uids_are_uuid_derived_and_fresh():
    uids = {dicom_uid() for _ in range(100)}
    assert len(uids) == 100
    for uid in uids:
        assert uid.startswith("2.25.") and int(uid[5:]) < 2**128 and UID(uid).is_valid


def test_uids_from_entropy_are_deterministic_valid_and_distinct():
    root = "0123456789abcdef"
    instance = dicom_uid(root, "instance", "c1", 3)
    assert instance == dicom_uid(root, "instance", "c1", 3) == dicom_uid(root, "instance", "c1", "3")
    assert UID(instance).is_valid and len(instance) <= 64
    others = {dicom_uid(root, "study"), dicom_uid(root, "series", "c1"), dicom_uid(root, "instance", "c1", 4),
              dicom_uid("another root", "instance", "c1", 3), instance}  # fmt: skip
    assert len(others) == 5
    # the parts are kept apart: ("ab", "c") and ("a", "bc") are different sources
    assert dicom_uid("ab", "c") != dicom_uid("a", "bc")
