"""Shared test fixtures: where the real third-party data lives, and skipping cleanly without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MONAI_FRACTURE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
DICOM_CORPUS = SHARED_DATA / "dicom"
FRACATLAS = SHARED_DATA / "fracatlas"


@pytest.fixture(scope="session")
def dicom_corpus() -> Path:
    """The real DICOM test corpus (../shared/data/dicom), or skip with the reason."""
    if not (DICOM_CORPUS / "INVENTORY.csv").is_file():
        pytest.skip(f"real DICOM corpus not found at {DICOM_CORPUS} (set MONAI_FRACTURE_SHARED_DATA)")
    return DICOM_CORPUS


@pytest.fixture(scope="session")
def fracatlas() -> Path:
    """The FracAtlas development part (../shared/data/fracatlas), or skip with the reason."""
    if not (FRACATLAS / "labels.csv").is_file():
        pytest.skip(f"FracAtlas not found at {FRACATLAS} (set MONAI_FRACTURE_SHARED_DATA)")
    return FRACATLAS
