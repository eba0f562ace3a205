"""Progress for people who wait: a tqdm bar on a terminal, log lines (count, rate, ETA) elsewhere.

A bar redrawn with carriage returns is unreadable in a CI log, ``nohup`` file or job scheduler,
and a disabled bar says nothing for minutes. ``ProgressLog`` writes one line every
``interval_s`` seconds instead, through ``logging`` (logger ``monai_fracture.progress``), so
the lines carry timestamps and go wherever the application sends its logs.
``$MONAI_FRACTURE_PROGRESS_S`` sets the default interval (seconds).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

logger = logging.getLogger("monai_fracture.progress")

ENV_INTERVAL = "MONAI_FRACTURE_PROGRESS_S"
DEFAULT_INTERVAL_S = 10.0


class Progress(Protocol):
    def update(self, n: int = 1) -> None: ...

    def close(self) -> None: ...


def default_interval() -> float:
    """Seconds between progress lines: ``$MONAI_FRACTURE_PROGRESS_S`` or 10."""
    try:
        return max(0.0, float(os.environ.get(ENV_INTERVAL, DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``: short enough for a log line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class ProgressLog:
    """Log ``desc: done/total unit (pct), rate unit/s, ETA ...`` every ``interval_s`` seconds.

    The rate is the mean since the first ``update`` (the first item often carries start-up cost:
    backend choice, worker start), so the ETA settles instead of jumping with every batch.
    ``close`` logs the final count and the time taken.
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str = "images",
        interval_s: float | None = None,
        log: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.interval_s = default_interval() if interval_s is None else interval_s
        self.log = log or logger
        self.clock = clock
        self.done = 0
        self.started = clock()
        self.last_line = self.started
        self.closed = False
        self.log.info("%s: %s %s to go", desc, "?" if total is None else total, unit)

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.done / elapsed
        text = f"{self.desc}: {self.done}"
        if self.total:
            text += f"/{self.total} {self.unit} ({100.0 * self.done / self.total:.0f}%)"
        else:
            text += f" {self.unit}"
        text += f", {rate:.1f} {self.unit}/s"
        if self.total and rate > 0 and self.done < self.total:
            text += f", ETA {format_duration((self.total - self.done) / rate)}"
        return text

    def update(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if now - self.last_line >= self.interval_s:
            self.last_line = now
            self.log.info("%s", self.line())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.log.info("%s: %s in %s", self.desc, self.line().split(": ", 1)[1].split(", ETA")[0],
                      format_duration(self.clock() - self.started))


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress(total: int | None, desc: str, mode: bool | None, unit: str = "images", **tqdm_kwargs: Any) -> Progress:
    """A tqdm bar (``mode`` True, or None on a terminal), log lines (None elsewhere), or nothing (False)."""
    if mode is False:
        return _NoProgress()
    if mode is None and not sys.stderr.isatty():
        return ProgressLog(total, desc, unit=unit)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, **tqdm_kwargs)
