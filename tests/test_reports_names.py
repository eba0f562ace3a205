"""Derived UIDs and output names: deterministic, valid DICOM, and never a path taken from a tag value."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydicom.uid import UID

from monai_fracture.reports.evidence import is_valid_uid
from monai_fracture.files import stable_hash
from monai_fracture.reports.files import derived_uid, object_file_name, study_folder

STUDY = "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012345"


def test_derived_uids_are_stable_valid_and_distinct() -> None:
    sr = derived_uid("sr", STUDY, "model@1", "0.5")
    assert sr == derived_uid("sr", STUDY, "model@1", "0.5")  # a re-run replaces, not duplicates
    others = {derived_uid("kos", STUDY, "model@1", "0.5"), derived_uid("sr", STUDY, "model@2", "0.5"),
              derived_uid("sr", STUDY, "model@1", "0.6"), derived_uid("sr", STUDY + "1", "model@1", "0.5")}
    assert sr not in others and len(others) == 4
    for uid in others | {sr}:
        assert uid.startswith("2.25.") and len(uid) <= 64
        assert is_valid_uid(uid) and UID(uid).is_valid
    # the 2.25 root is followed by a decimal rendering of a 128-bit-or-more hash: long, not a counter
    assert len(sr) >= len("2.25.") + 38


def test_parts_are_stringified() -> None:
    assert derived_uid("tracking", 1, 2.5) == derived_uid("tracking", "1", "2.5")


def test_stable_hash_separates_parts_and_honours_its_length() -> None:
    assert stable_hash("ab", "c") != stable_hash("a", "bc")
    assert stable_hash("x") == hashlib.sha256(b"x").hexdigest()[:16]
    assert stable_hash("a", "b") == hashlib.sha256(b"a\x1fb").hexdigest()[:16]
    assert len(stable_hash("x", length=32)) == 32 and stable_hash("x", length=32).startswith(stable_hash("x"))
    assert stable_hash("\ud800 lone surrogate")  # a badly decoded tag value still names a folder


def test_study_folder_hashes_the_uid(tmp_path: Path) -> None:
    folder = study_folder(tmp_path, STUDY)
    assert folder.parent == tmp_path and folder.name == f"study-{hashlib.sha256(STUDY.encode()).hexdigest()[:16]}"
    hostile = study_folder(tmp_path, "../../etc/passwd")
    assert hostile.parent == tmp_path and "/" not in hostile.name and ".." not in hostile.name
    assert study_folder(tmp_path, STUDY) != study_folder(tmp_path, STUDY + "0")


def test_object_file_names_keep_valid_uids_and_hash_the_rest() -> None:
    uid = derived_uid("sr", STUDY)
    assert object_file_name("SR", uid) == f"SR_{uid}.dcm"
    for bad in ("../../etc/passwd", "1.02.3", "1.2.", "", "1" * 65, "1.2.3 "):
        name = object_file_name("KO", bad)
        assert name == f"KO_{hashlib.sha256(bad.encode()).hexdigest()[:32]}.dcm", bad


@pytest.mark.parametrize(
    "value, valid",
    [("1.2.3", True), ("0.1", True), ("1", True), ("0", True), ("2.25.0", True), ("1." + "2" * 62, True), ("1." + "2" * 63, False),
     ("1.02.3", False), ("01.2", False), ("1..2", False), ("1.2.", False), (".1", False), ("", False),
     ("1.2.a", False), ("1.2.3\n", False), (None, False), (123, False)],
)
def test_is_valid_uid(value: object, valid: bool) -> None:
    assert is_valid_uid(value) is valid
