"""Local engine vs Ray Data engine on the same generated files, in one run (a benchmark, not a test).

Both score the same ``--n`` generated 2048x2048 DX files with the same model and default DICOM
outputs. Ray is timed twice: with its local cluster start (what ``--engine ray`` costs on one
machine) and on a cluster that is already up (what it costs per archive once a cluster runs).
The ratio Ray/local (images/s) is the overhead of the engine; the target on 2 cores is >= 0.8
(overhead within 25%).

    python -m benchmarks.bench_engines --n 500
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import BenchContext, Row, Section, Timing, standalone

logger = logging.getLogger("benchmarks.bench_engines")
N_FILES = 500
RAY_TARGET = 0.8


def _score(files_dir: Path, model: Path, engine: str, workers: int, batch_size: int) -> tuple[float, int]:
    from monai_fracture.scoring import score_paths

    work = Path(tempfile.mkdtemp(prefix=f"engine-{engine}-"))
    try:
        summary = score_paths([files_dir], work / "out", model=model, batch_size=batch_size, workers=workers,
                              progress=False, engine=engine)
        import json

        manifest = json.loads(summary.manifest.read_text())
        return float(manifest["timings"]["total_s"]), int(manifest["scored_this_run"])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(ctx: BenchContext, args: Any = None) -> Section:
    from benchmarks.score_folder import benchmark_model, prepare_data
    from monai_fracture.scoring import ray_engine

    n = getattr(args, "n", None) or (48 if ctx.quick else N_FILES)
    data = ctx.data_dir / "engines"
    files = prepare_data(data, n, 2048, compress=True)
    model = benchmark_model(None, files[:16], ctx.out_dir)
    workers, batch_size = 2, 16
    repeats = 1 if ctx.quick else max(1, min(ctx.repeats, 2))
    local, ray_cold, ray_warm = [], [], []
    for _ in range(repeats):
        seconds, scored = _score(data, model, "local", workers, batch_size)
        local.append(seconds)
        seconds, _ = _score(data, model, "ray", workers, batch_size)  # starts and stops its own cluster
        ray_cold.append(seconds)
    started = ray_engine.connect(ray_engine.RaySettings())
    try:
        for _ in range(repeats):
            ray_warm.append(_score(data, model, "ray", workers, batch_size)[0])
    finally:
        ray_engine.disconnect(started)
    rows = [Row.rate("local engine", Timing(local), scored)]
    for case, values in (("ray engine, cluster already up", ray_warm), ("ray engine, incl. local cluster start", ray_cold)):
        row = Row.rate(case, Timing(values), scored, baseline="local engine")
        row.ratio = row.median / rows[0].median
        row.ratio_meaning = "x the local engine's images/s"
        if "already up" in case:
            row.target, row.passed = f">= {RAY_TARGET}", row.ratio >= RAY_TARGET
        rows.append(row)
    return Section(name="engines", title=f"local vs Ray Data engine, {scored} generated 2048x2048 DX files, "
                   "default DICOM outputs", rows=rows, details={"files": scored, "workers": workers,
                                                                "batch_size": batch_size})


def _arguments(parser) -> None:
    parser.add_argument("--n", type=int, default=None, help=f"generated files (default {N_FILES}; 48 with --quick)")


if __name__ == "__main__":
    standalone(__doc__.splitlines()[0], run, repeats=1, add_arguments=_arguments)
