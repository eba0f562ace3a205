"""Progress lines for logs: count, rate and ETA at a fixed interval, the bar only on a terminal."""

from __future__ import annotations

import logging
import sys

import pytest

from monai_fracture.progress import ProgressLog, _NoProgress, format_duration, progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_come_at_the_interval_with_rate_and_eta(caplog) -> None:
    clock = Clock()
    caplog.set_level(logging.INFO, logger="monai_fracture.progress")
    bar = ProgressLog(200, "scoring", interval_s=10.0, clock=clock)
    for _ in range(4):  # 4 images in 8 s: no line yet
        clock.now += 2.0
        bar.update(1)
    clock.now += 2.0
    bar.update(1)  # 5 images in 10 s: a line, 0.5 images/s, 195 to go -> 390 s
    clock.now += 60.0
    bar.update(195)
    bar.close()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "scoring: 200 images to go",
        "scoring: 5/200 images (2%), 0.5 images/s, ETA 6 min 30 s",
        "scoring: 200/200 images (100%), 2.9 images/s",
        "scoring: 200/200 images (100%), 2.9 images/s in 1 min 10 s",
    ]


def test_durations_read_like_a_person_writes_them() -> None:
    assert format_duration(42.4) == "42 s"
    assert format_duration(185) == "3 min 05 s"
    assert format_duration(2 * 3600 + 7 * 60 + 59) == "2 h 07 min"


def test_mode_picks_bar_log_or_nothing(monkeypatch) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert isinstance(progress(3, "x", None), ProgressLog)
    assert isinstance(progress(3, "x", False), _NoProgress)
    from tqdm.auto import tqdm

    bar = progress(3, "x", True)
    assert isinstance(bar, tqdm)
    bar.close()


def test_interval_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("MONAI_FRACTURE_PROGRESS_S", "2.5")
    assert ProgressLog(1, "x").interval_s == pytest.approx(2.5)
    monkeypatch.setenv("MONAI_FRACTURE_PROGRESS_S", "soon")
    assert ProgressLog(1, "x").interval_s == pytest.approx(10.0)
