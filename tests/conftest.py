"""Shared test fixtures: where the real third-party data lives; skipping without it here, failing in CI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.needs import IN_CI, missing

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MONAI_FRACTURE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
DICOM_CORPUS = SHARED_DATA / "dicom"
FRACATLAS = SHARED_DATA / "fracatlas"


@pytest.fixture(scope="session")
def dicom_corpus() -> Path:
    """The real DICOM test corpus (../shared/data/dicom), or skip with the reason."""
    if not (DICOM_CORPUS / "INVENTORY.csv").is_file():
        missing(f"real DICOM corpus not found at {DICOM_CORPUS} (set MONAI_FRACTURE_SHARED_DATA)")
    return DICOM_CORPUS


@pytest.fixture(scope="session")
def fracatlas() -> Path:
    """The FracAtlas development part (../shared/data/fracatlas), or skip with the reason."""
    if not (FRACATLAS / "labels.csv").is_file():
        missing(f"FracAtlas not found at {FRACATLAS} (set MONAI_FRACTURE_SHARED_DATA)")
    return FRACATLAS


def _no_skips_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Under CI=true a skip (a skipif, an importorskip, a bare pytest.skip) fails the run instead."""
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true forbids skips (`make test` installs what the tests need): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    _no_skips_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> object:
    outcome = yield
    _no_skips_in_ci(outcome.get_result())
