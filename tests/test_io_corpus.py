"""Every file of the real DICOM corpus is read into a sane array or refused with ImageReadError."""

from __future__ import annotations

import collections
import csv
import math
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest

from monai_fracture.io import ImageReadError, ReadFailure, group_series, read_image, scan_dicom_headers

# Parametrisation needs the inventory at collection time; same location rule as the conftest fixture.
DICOM_CORPUS = Path(os.environ.get("MONAI_FRACTURE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "dicom"

# Files the corpus README lists as broken or not decodable with pydicom 3.0.2 + pylibjpeg.
BROKEN = {
    "pydicom_test_files/JPEG-lossy.dcm": None,
    # its SIZ segment holds a sequence delimiter: the stream claims 1024 x 3722445056, refused before decoding
    "pydicom_test_files/JPEG2000-embedded-sequence-delimiter.dcm": ReadFailure.UNSUPPORTED_GEOMETRY,
    "pydicom_test_files/MR_truncated.dcm": ReadFailure.TRUNCATED,
    "pydicom_test_files/badVR.dcm": None,
    "pydicom_test_files/meta_missing_tsyntax.dcm": None,
    "pydicom_test_files/nested_priv_SQ.dcm": None,
    "pylibjpeg_data/JPEG2000Lossless/966.dcm": ReadFailure.UNDECODABLE,
    "pylibjpeg_data/JPEGExtended/RG2_JPLY.dcm": None,
}
# Non-image objects by policy (docs/reading.md): reports, RT objects, waveforms, SEG labels, RT dose grids.
NON_IMAGE_MODALITIES = {"SR", "RTSTRUCT", "RTPLAN", "RTDOSE", "SEG", "ECG", "ANN"}


def _inventory() -> list[dict[str, str]]:
    path = DICOM_CORPUS / "INVENTORY.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


INVENTORY = _inventory()


def expectation(row: dict[str, str]) -> str:
    """'not_dicom', 'not_image', 'broken' or 'image' from the inventory alone."""
    if row["is_dicom"] != "True":
        return "not_dicom"
    if row["path"] in BROKEN:
        return "broken"
    if row["modality"] in NON_IMAGE_MODALITIES or not row["rows"]:
        return "not_image"
    return "image"


_CACHE: dict[Path, tuple[str, np.ndarray | None, dict | None]] = {}


def read_outcome(path: Path) -> tuple[str, np.ndarray | None, dict | None]:
    """Read once per session: the tally and the MONOCHROME1 check reuse the per-file result."""
    if path not in _CACHE:
        _CACHE[path] = _read_outcome(path)
    outcome, values, meta = _CACHE[path]
    if values is not None and (meta or {}).get("photometric") != "MONOCHROME1":
        _CACHE[path] = (outcome, None, meta)  # keep only the arrays a later test needs
    return outcome, values, meta


def _read_outcome(path: Path) -> tuple[str, np.ndarray | None, dict | None]:
    try:
        values, meta = read_image(path)
    except ImageReadError as exc:
        assert exc.path == str(path)
        assert str(exc).startswith(f"{path}: {exc.reason.value}")
        return exc.reason.value, None, None
    return "read", values, meta


@pytest.mark.timeout(30)
@pytest.mark.parametrize("row", INVENTORY, ids=[r["path"] for r in INVENTORY])
def test_corpus_file_is_read_or_refused(dicom_corpus: Path, row: dict[str, str]) -> None:
    outcome, values, meta = read_outcome(dicom_corpus / row["path"])
    expected = expectation(row)
    if expected == "not_dicom":
        assert outcome == ReadFailure.NOT_DICOM.value
    elif expected == "not_image":
        assert outcome in (ReadFailure.NOT_AN_IMAGE.value, ReadFailure.NO_PIXEL_DATA.value)
        if row["modality"] in NON_IMAGE_MODALITIES:
            assert outcome == ReadFailure.NOT_AN_IMAGE.value
    elif expected == "broken":
        assert outcome != "read"
        if BROKEN[row["path"]] is not None:
            assert outcome == BROKEN[row["path"]].value
    else:
        assert outcome == "read", f"{row['path']} ({row['notes']}) was refused: {outcome}"
        assert values is not None and meta is not None
        assert values.dtype == np.float32 and np.isfinite(values).all()
        assert values.shape[-2:] == (int(float(row["rows"])), int(float(row["cols"])))
        assert values.ndim == 2 or meta["frame_rule"] == "volume"
        assert meta["format"] == "dicom" and meta["sop_uid"] != ""  # None only where the file's UID is empty
        if meta["presentation_ready"]:
            assert 0.0 <= float(values.min()) and float(values.max()) <= 1.0


@pytest.mark.timeout(120)
def test_corpus_outcome_counts(dicom_corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The per-reason tally (printed for the report) accounts for every inventory row."""
    counts: collections.Counter[str] = collections.Counter()
    for row in INVENTORY:
        outcome, _, _ = read_outcome(dicom_corpus / row["path"])
        counts[outcome] += 1
    with capsys.disabled():
        print("\nDICOM corpus outcomes:", dict(sorted(counts.items())))
    assert sum(counts.values()) == len(INVENTORY) == 244
    assert counts["read"] == sum(expectation(r) == "image" for r in INVENTORY)
    assert counts[ReadFailure.NOT_DICOM.value] == sum(expectation(r) == "not_dicom" for r in INVENTORY)
    assert set(counts) <= {"read"} | {reason.value for reason in ReadFailure}


MONOCHROME1_ROWS = [r for r in INVENTORY if r["photometric"] == "MONOCHROME1" and expectation(r) == "image"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("row", MONOCHROME1_ROWS, ids=[r["path"] for r in MONOCHROME1_ROWS])
def test_monochrome1_radiographs_come_out_inverted(dicom_corpus: Path, row: dict[str, str]) -> None:
    path = dicom_corpus / row["path"]
    outcome, values, meta = read_outcome(path)
    assert outcome == "read" and values is not None and meta is not None
    stored = pydicom.dcmread(path).pixel_array.astype(np.float64)
    correlation = float(np.corrcoef(stored.ravel(), values.ravel())[0, 1])
    assert meta["inverted"] is True
    assert correlation < -0.5, correlation
    # the darkest stored pixel is among the brightest output pixels
    assert values.ravel()[int(np.argmin(stored))] >= np.percentile(values, 90)


def test_monochrome1_rows_exist_in_the_corpus(dicom_corpus: Path) -> None:
    assert len(MONOCHROME1_ROWS) >= 6  # CR1-3, dx_image, RG1_JLSN, 966_fixed


@pytest.mark.timeout(60)
def test_scan_and_group_the_corpus_headers(dicom_corpus: Path) -> None:
    headers = scan_dicom_headers(dicom_corpus)
    by_path = {Path(h["path"]).relative_to(dicom_corpus).as_posix(): h for h in headers}
    for row in INVENTORY:
        entry = by_path[row["path"]]
        if expectation(row) == "not_dicom":
            assert entry["reason"] == ReadFailure.NOT_DICOM.value
        elif expectation(row) == "image":
            assert entry["error"] is None, entry["error"]
            assert entry["series_uid"] == (row["series_instance_uid"] or None)
            assert entry["modality"] == (row["modality"] or None)
        elif expectation(row) == "not_image":
            assert entry["reason"] in (ReadFailure.NOT_AN_IMAGE.value, ReadFailure.NO_PIXEL_DATA.value)
        if entry["reason"] is not None:  # what the cheap scan refuses, the full read refuses alike
            assert read_outcome(dicom_corpus / row["path"])[0] == entry["reason"], row["path"]
    groups = group_series(headers)
    egsnrc = [g for g in groups.values() if all("egsnrc_ct_bone_phantom" in e["path"] for e in g)]
    assert len(egsnrc) == 1 and len(egsnrc[0]) == 10
    numbers = [e["instance_number"] for e in egsnrc[0]]
    assert numbers == sorted(numbers)
    assert all(not math.isnan(float(e["spacing"][0])) for e in egsnrc[0])
