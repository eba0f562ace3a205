"""``score --report``: one self-contained HTML page, opened in headless Chromium without console errors.

Also checks the progress lines ``score`` logs when stderr is not a terminal (the same run).
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orthanc import make_tiny_model

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)
CONSOLE = re.compile(r":CONSOLE(?::\d+)?\]\s*(.*)")


def _chromium_or_skip() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("headless Chromium is required in CI (apt-get install chromium)")
        pytest.skip("Chromium not installed (apt-get install chromium; make test installs it when root)")
    return CHROMIUM


def open_in_chromium(page: Path, screenshot: Path, width: int = 1280, height: int = 2400) -> list[str]:
    """Render ``page`` headless, write a PNG screenshot, return the page's console messages."""
    command = [
        _chromium_or_skip(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-extensions", "--enable-logging=stderr", "--v=0", f"--user-data-dir={screenshot.parent / 'chrome'}",
        f"--window-size={width},{height}", f"--screenshot={screenshot}", page.resolve().as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert screenshot.is_file(), f"no screenshot (exit {result.returncode}):\n{result.stderr[-2000:]}"
    return [m.group(1) for m in map(CONSOLE.search, result.stderr.splitlines()) if m]


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    from monai_fracture.data import generate_demo_dataset

    root = tmp_path_factory.mktemp("report")
    studies = root / "studies"
    generate_demo_dataset(studies, n=10, seed=0, size=96)
    model = make_tiny_model(root / "model", size=64)
    out = root / "scored"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
               MONAI_FRACTURE_PROGRESS_S="0")
    result = subprocess.run(
        [sys.executable, "-m", "monai_fracture", "score", str(studies), "--out", str(out), "--model", str(model),
         "--no-dicom", "--batch-size", "4", "--report", "--labels", str(studies / "labels.csv")],
        capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return studies, out, result


def test_score_logs_progress_lines_off_a_terminal(report_run) -> None:
    _, _, result = report_run
    lines = [line for line in result.stderr.splitlines() if "monai_fracture.progress" in line]
    assert any("scoring: 10 images to go" in line for line in lines), result.stderr[-2000:]
    rates = [line for line in lines if re.search(r"scoring: \d+/10 images \(\d+%\), [\d.]+ images/s", line)]
    assert rates, result.stderr[-2000:]
    assert any("ETA" in line for line in rates), rates
    assert any(re.search(r"scoring: 10/10 images \(100%\), [\d.]+ images/s in \d+ s", line) for line in lines), lines
    assert "\r" not in result.stderr  # no carriage-return bar in a log file


def test_report_is_self_contained_with_table_roc_and_heatmaps(report_run) -> None:
    studies, out, result = report_run
    page = out / "report.html"
    assert str(page) in result.stdout
    text = page.read_text(encoding="utf-8")
    results = pd.read_csv(out / "results.csv", dtype=str, keep_default_na=False)
    labels = pd.read_csv(studies / "labels.csv")
    # every input has its row, escaped
    for path in results["path"]:
        assert f"<td>{html.escape(path, quote=True)}</td>" in text
    # nothing is fetched from elsewhere: no scripts, no links, only data: images
    assert "<script" not in text.lower()
    assert re.findall(r'(?:src|href)="(?!data:)', text) == []
    images = re.findall(r'<img src="data:image/png;base64,', text)
    assert len(images) == (results["status"] == "scored").sum() == 10
    # the ROC's AUC is the one scikit-learn computes from results.csv and the labels
    from sklearn.metrics import roc_auc_score

    merged = labels.assign(path=[str((studies / p).resolve()) for p in labels["path"]]).merge(
        results.assign(path=[str(Path(p).resolve()) for p in results["path"]]), on="path")
    auc = roc_auc_score(merged["label"], merged["probability"].astype(float))
    assert f"ROC-AUC {auc:.3f} over 10 labelled scored images" in text
    assert "<svg" in text and f"AUC {auc:.3f}" in text


def test_report_renders_in_chromium_without_console_messages(report_run, tmp_path) -> None:
    _, out, _ = report_run
    shot = tmp_path / "report.png"
    messages = open_in_chromium(out / "report.html", shot)
    assert messages == []
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # the ROC curve is drawn (#c0392b) and the jet-coloured heatmaps show (saturated blue/red pixels)
    curve = (np.abs(pixels - [0xC0, 0x39, 0x2B]).sum(axis=2) < 40).sum()
    assert curve > 200, curve
    shutil.copy(shot, out / "report.png")  # kept beside the report for a person to look at


def test_chromium_check_sees_console_errors(tmp_path) -> None:
    """The console check above can fail: a broken script and a blocked fetch are reported."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" '
                    "content=\"default-src 'none'\"></head><body><img src=\"https://example.invalid/x.png\">"
                    "<script>notDefined()</script></body></html>")
    messages = open_in_chromium(page, tmp_path / "broken.png", 400, 300)
    assert messages, "Chromium reported no console message for a page with errors"


def test_bad_labels_stop_before_scoring(tmp_path) -> None:
    """A labels file without the columns the report needs is refused up front, naming the file (exit 2)."""
    labels = tmp_path / "truth.csv"
    labels.write_text("file,fractured\na.dcm,1\n")
    (tmp_path / "in").mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, "-m", "monai_fracture", "score", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
         "--report", "--labels", str(labels)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 2
    assert f"{labels}: labels need a 'label' column and a 'path' or 'sop_uid' column" in result.stderr
    assert not (tmp_path / "out").exists()
