"""results.csv: one row per input file, written atomically, sorted by path; shards merge into one."""

from __future__ import annotations

import csv
import io
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from monai_fracture.files import atomic_write_bytes

#: The public column contract (docs/scoring.md, /work/shared/design.md "Conventions").
COLUMNS: tuple[str, ...] = (
    "path",
    "status",
    "reason",
    "study_uid",
    "series_uid",
    "sop_uid",
    "probability",
    "prediction",
    "threshold",
    "model",
)
STATUSES = ("scored", "skipped", "failed")


@dataclass
class ResultRow:
    """One results.csv row. ``prediction`` is 1 (fracture) / 0 (no fracture), empty unless scored."""

    path: str
    status: str
    reason: str = ""
    study_uid: str = ""
    series_uid: str = ""
    sop_uid: str = ""
    probability: str = ""
    prediction: str = ""
    threshold: str = ""
    model: str = ""

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> ResultRow:
        return cls(**{k: "" if data.get(k) is None else str(data.get(k)) for k in COLUMNS})

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def format_probability(value: float) -> str:
    return "" if value is None or not math.isfinite(float(value)) else f"{float(value):.6f}"


def format_threshold(value: float) -> str:
    return f"{float(value):.6g}"


def printable(value: object, limit: int = 256) -> str:
    """A tag value as CSV text: no control characters or line breaks, bounded length."""
    if value is None:
        return ""
    text = "".join(ch if ch.isprintable() else " " for ch in str(value))
    return text[:limit]


#: First characters that make a spreadsheet read a cell as a formula (OWASP "CSV Injection").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """A cell that spreadsheets show as text: a leading formula character gets a ``'`` before it.

    Idempotent (``'=x`` starts with a quote), so shards merged from escaped files are not escaped twice.
    """
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


def render_csv(rows: Iterable[ResultRow]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: r.path):
        writer.writerow({key: spreadsheet_safe(value) for key, value in row.to_dict().items()})
    return buffer.getvalue().encode("utf-8", "surrogateescape")


def write_results_csv(path: str | os.PathLike, rows: Iterable[ResultRow]) -> Path:
    """Write (or replace) a results CSV atomically, rows sorted by path."""
    return atomic_write_bytes(path, render_csv(rows))


def read_results_csv(path: str | os.PathLike) -> list[ResultRow]:
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        return [ResultRow.from_mapping(row) for row in csv.DictReader(handle)]


def count_statuses(rows: Iterable[ResultRow]) -> tuple[dict[str, int], dict[str, int]]:
    """Counts per status and per reason code (the part of ``reason`` before the first colon)."""
    statuses: Counter[str] = Counter({s: 0 for s in STATUSES})
    reasons: Counter[str] = Counter()
    for row in rows:
        statuses[row.status] += 1
        if row.reason:
            reasons[f"{row.status}: {row.reason.split(':', 1)[0]}"] += 1
    return dict(statuses), dict(sorted(reasons.items()))
