"""What every benchmark section shares: repeated timing with spread, machine facts, result rows.

A section is a module with ``run(ctx: BenchContext) -> Section``. Every figure it reports is a
median over ``ctx.repeats`` runs with min/max beside it, and every ratio compares two figures
measured in the same process, on the same data, one after the other.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT_DIR = Path("benchmarks/out")


@dataclass
class BenchContext:
    """Options shared by all sections (``python -m benchmarks.run --help``)."""

    out_dir: Path = OUT_DIR
    device: str = "cpu"
    repeats: int = 5
    quick: bool = False

    @property
    def data_dir(self) -> Path:
        """Generated inputs, reused between runs (``benchmarks/out/data``)."""
        path = self.out_dir / "data"
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class Timing:
    """Seconds per repeat: the median and the spread over the repeats."""

    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def to_dict(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.low, "max": self.high, "repeats": len(self.values),
                "values": self.values}


def measure(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> Timing:
    """Wall seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(max(0, warmup)):
        fn()
    values = []
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        fn()
        values.append(time.perf_counter() - started)
    return Timing(values)


@dataclass
class Row:
    """One line of the printed table.

    ``median``/``low``/``high`` are in ``unit``; ``ratio`` compares with the row named
    ``baseline`` in the same section (how the ratio reads is in ``ratio_meaning``).
    """

    case: str
    metric: str
    median: float
    low: float
    high: float
    unit: str
    baseline: str | None = None
    ratio: float | None = None
    ratio_meaning: str | None = None
    target: str | None = None
    passed: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def rate(cls, case: str, timing: Timing, items: int, unit: str = "img/s", **kwargs: Any) -> Row:
        """Items per second from seconds per repeat (the median rate is items / median time)."""
        return cls(case=case, metric="throughput", median=items / timing.median, low=items / timing.high,
                   high=items / timing.low, unit=unit, **kwargs)

    @classmethod
    def latency(cls, case: str, timing: Timing, items: int = 1, unit: str = "ms", **kwargs: Any) -> Row:
        """Milliseconds per item from seconds per repeat."""
        scale = 1000.0 / items
        return cls(case=case, metric="latency", median=timing.median * scale, low=timing.low * scale,
                   high=timing.high * scale, unit=unit, **kwargs)


@dataclass
class Section:
    """A benchmark section's result: rows for the table, anything else in ``details``."""

    name: str
    title: str
    rows: list[Row]
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else ``platform``): CPU times compare only on one model."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> dict[str, Any]:
    """Which machine produced the figures: CPU model, cores, threads, GPU, library versions."""
    import torch

    cpu = cpu_model()
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("monai", "onnxruntime", "pydicom", "numpy"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "usable_cpus": affinity,
            "torch_threads": torch.get_num_threads(), "gpu": gpu, "platform": platform.platform(),
            "versions": versions}


def print_section(section: Section) -> None:
    """The rows of one section as a plain table (``benchmarks.run`` prints all sections together)."""
    print(section.title)
    width = max([len(row.case) for row in section.rows] + [4])
    print(f"{'case':{width}s} {'median':>10s} {'min':>10s} {'max':>10s} unit    ratio")
    for row in section.rows:
        ratio = "" if row.ratio is None else f"{row.ratio:.3f}"
        if row.target:
            ratio += f" (target {row.target}: {'ok' if row.passed else 'FAIL'})"
        print(f"{row.case:{width}s} {row.median:10.3f} {row.low:10.3f} {row.high:10.3f} {row.unit:7s} {ratio}")


def standalone(description: str, run: Callable[[BenchContext, Any], Section], argv: list[str] | None = None,
               repeats: int = 5, add_arguments: Callable[[Any], None] | None = None) -> Section:
    """``python -m benchmarks.bench_X``: one section on its own, printed and optionally saved as JSON.

    ``run(ctx, args)`` gets the parsed arguments (``--repeats``, ``--quick``, ``--json`` plus
    whatever ``add_arguments(parser)`` added).
    """
    import argparse
    import json
    import logging

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="write the section as JSON here")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    ctx = BenchContext(repeats=args.repeats, quick=args.quick)
    started = time.perf_counter()
    section = run(ctx, args)
    section.seconds = time.perf_counter() - started
    print_section(section)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(section.to_dict(), indent=2, default=str))
    return section
