"""Peak memory of ``monai-fracture score`` on 200 and on 2,000 radiographs (target: ratio <= 1.2).

Scoring streams (docs/scoring.md): only a small record per file is held, never decoded images,
so memory should not grow with the folder. This section checks it on the real CLI:

- 2,000 DICOM radiographs are generated once with our own phantom generator
  (``generate_demo_dataset``, 512x512, uncompressed, several views per study) under
  ``benchmarks/out/data/memory/all-2000``; ``first-200`` holds hard links to the first 200 files
  (sorted by path, so whole studies except perhaps the last).
- ``python -m monai_fracture score DIR --out FRESH --workers 2 --no-progress`` runs as a child
  process with the default outputs (results.csv, manifest, journal and one SR, plus a KOS when
  a study has a positive image, per study: SR writing is part of scoring). Every ~50 ms the
  whole process tree (the CLI, its DataLoader workers, its forked report worker) is sampled.
- Per run: peak of the summed PSS (``/proc/PID/smaps_rollup``: shared pages split between the
  processes that map them, so forked workers' copy-on-write pages of torch/MONAI are counted
  once), peak of the summed RSS (counts those shared pages once per process: an upper bound),
  the main process's own peak RSS, ``ru_maxrss`` from ``wait4`` (the largest single process of
  the tree, not a sum), the wall time, and a coarse time series (every ~2 s) in ``details`` to
  tell growth from a one-off step.

The ratio (2,000 / 200) is taken on the summed PSS peak, the most honest figure of what the
tree really holds; the summed-RSS ratio is in ``extra``. Runs alternate 200, 2,000, 200, 2,000
so drift on a shared machine hits both sizes alike; two repeats per size (one with ``--quick``)
because each 2,000-file run takes minutes on a CPU.

    python -m benchmarks.bench_memory [--repeats 2] [--quick] [--workers 2]
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import BenchContext, Row, Section, Timing, machine, standalone

logger = logging.getLogger("benchmarks.bench_memory")

N_LARGE = 2000
N_SMALL = 200
SIZE = "512x512"
SEED = 0
WORKERS = 2
SAMPLE_S = 0.05
TARGET = 1.2
MIB = 1024.0 * 1024.0


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("image_*") if p.is_file())


def prepare_data(root: Path) -> tuple[Path, Path]:
    """``root/all-2000`` (generated once) and ``root/first-200`` (hard links to its first 200 files)."""
    from monai_fracture.data.synthetic import generate_demo_dataset

    large, small = root / f"all-{N_LARGE}", root / f"first-{N_SMALL}"
    marker = root / f".generated-{N_LARGE}-{SIZE}-{SEED}"
    if not marker.is_file():
        for folder in (large, small):
            if folder.exists():
                shutil.rmtree(folder)
        started = time.perf_counter()
        generate_demo_dataset(large, n=N_LARGE, modality="xr", seed=SEED, size=SIZE, compress=False,
                              workers=max(1, min(4, os.cpu_count() or 1)))
        logger.info("generated %d radiographs in %.0f s", N_LARGE, time.perf_counter() - started)
        files = _images(large)
        if len(files) != N_LARGE:
            raise RuntimeError(f"expected {N_LARGE} images under {large}, found {len(files)}")
        for path in files[:N_SMALL]:
            target = small / path.relative_to(large)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
        marker.write_text("ok\n")
    return small, large


#: PSS needs /proc/PID/smaps_rollup (Linux 4.14+); without it the ratio falls back to summed RSS.
HAS_ROLLUP = os.path.exists("/proc/self/smaps_rollup")


def _rollup(pid: int) -> tuple[int, int | None]:
    """(RSS, PSS) in bytes of one process; PSS None without smaps_rollup. A process that has just
    exited (gone, or a zombie with no mappings) counts 0."""
    if not HAS_ROLLUP:
        import psutil

        try:
            return psutil.Process(pid).memory_info().rss, None
        except psutil.Error:
            return 0, None
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


@dataclass
class RunMemory:
    files: int
    wall_s: float
    peak_rss_sum: int
    peak_pss_sum: int | None
    peak_main_rss: int
    ru_maxrss: int
    max_processes: int
    samples: int
    returncode: int
    series: list[tuple[float, int, int]]  # (seconds, summed PSS or RSS MiB, main RSS MiB) every ~2 s


def score_and_sample(folder: Path, out: Path, workers: int) -> RunMemory:
    """Run the CLI on ``folder`` and sample its process tree until it exits."""
    import psutil

    if out.exists():
        shutil.rmtree(out)
    command = [sys.executable, "-m", "monai_fracture", "score", str(folder), "--out", str(out),
               "--workers", str(workers), "--no-progress"]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parent = psutil.Process(child.pid)
    peak_rss = peak_main = peak_procs = samples = 0
    peak_pss: int | None = 0
    status = rusage = None
    series: list[tuple[float, int, int]] = []
    main_rss = 0
    while True:
        try:
            tree = [parent] + parent.children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        rss_sum, pss_sum = 0, 0
        for index, proc in enumerate(tree):
            rss, pss = _rollup(proc.pid)
            rss_sum += rss
            pss_sum = None if pss is None or pss_sum is None else pss_sum + pss
            if index == 0:
                main_rss = rss
                peak_main = max(peak_main, rss)
        if tree:
            if samples % 40 == 0:
                series.append((round(time.perf_counter() - started, 1), round((pss_sum or rss_sum) / MIB),
                               round(main_rss / MIB)))
            samples += 1
            peak_rss = max(peak_rss, rss_sum)
            peak_procs = max(peak_procs, len(tree))
            peak_pss = None if pss_sum is None or peak_pss is None else max(peak_pss, pss_sum)
        pid, status, rusage = os.wait4(child.pid, os.WNOHANG)
        if pid == child.pid:
            break
        time.sleep(SAMPLE_S)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    stderr = child.stderr.read().decode(errors="replace") if child.stderr else ""
    if child.stderr:
        child.stderr.close()
    if child.returncode != 0 or not (out / "results.csv").is_file():
        raise RuntimeError(f"{' '.join(command)} exited {child.returncode}:\n{stderr[-2000:]}")
    return RunMemory(files=len(_images(folder)), wall_s=wall, peak_rss_sum=peak_rss, peak_pss_sum=peak_pss,
                     peak_main_rss=peak_main, ru_maxrss=rusage.ru_maxrss * 1024, max_processes=peak_procs,
                     samples=samples, returncode=child.returncode, series=series)


def _mib_timing(values: list[int | None]) -> Timing | None:
    if any(v is None for v in values):
        return None
    return Timing([v / MIB for v in values])


def run(ctx: BenchContext, workers: int = WORKERS) -> Section:
    root = ctx.data_dir / "memory"
    root.mkdir(parents=True, exist_ok=True)
    small, large = prepare_data(root)
    repeats = 1 if ctx.quick else max(1, min(ctx.repeats, 2))
    runs: dict[int, list[RunMemory]] = {N_SMALL: [], N_LARGE: []}
    scratch = ctx.out_dir / "memory-runs"
    for repeat in range(repeats):
        for n, folder in ((N_SMALL, small), (N_LARGE, large)):
            result = score_and_sample(folder, scratch / f"out-{n}", workers)
            logger.info("%d files: PSS %.0f MiB, RSS %.0f MiB, %.0f s", n, (result.peak_pss_sum or 0) / MIB,
                        result.peak_rss_sum / MIB, result.wall_s)
            runs[n].append(result)
    shutil.rmtree(scratch, ignore_errors=True)

    def figures(n: int) -> dict[str, Timing | None]:
        return {
            "pss": _mib_timing([r.peak_pss_sum for r in runs[n]]),
            "rss": _mib_timing([r.peak_rss_sum for r in runs[n]]),
            "main_rss": _mib_timing([r.peak_main_rss for r in runs[n]]),
            "ru_maxrss": _mib_timing([r.ru_maxrss for r in runs[n]]),
            "wall": Timing([r.wall_s for r in runs[n]]),
        }

    fig = {n: figures(n) for n in runs}
    honest = "pss" if fig[N_SMALL]["pss"] is not None and fig[N_LARGE]["pss"] is not None else "rss"
    label = {"pss": "summed PSS of the process tree", "rss": "summed RSS of the process tree"}[honest]
    rows: list[Row] = []
    for n in (N_SMALL, N_LARGE):
        f = fig[n]
        peak = f[honest]
        extra = {k: v.to_dict() for k, v in f.items() if v is not None and k != honest}
        extra["max_processes"] = max(r.max_processes for r in runs[n])
        extra["samples"] = [r.samples for r in runs[n]]
        rows.append(Row(case=f"score {n} files", metric=f"peak memory ({honest})", median=peak.median,
                        low=peak.low, high=peak.high, unit="MiB", extra=extra))
    ratio = fig[N_LARGE][honest].median / fig[N_SMALL][honest].median
    rss_ratio = fig[N_LARGE]["rss"].median / fig[N_SMALL]["rss"].median
    rows[1].baseline = rows[0].case
    rows[1].ratio = ratio
    rows[1].ratio_meaning = f"peak {label} at {N_LARGE} files / at {N_SMALL} files (lower is better)"
    rows[1].target = f"<= {TARGET}"
    rows[1].passed = ratio <= TARGET
    rows[1].extra["ratio_summed_rss"] = rss_ratio
    rows[1].extra["ratio_main_rss"] = fig[N_LARGE]["main_rss"].median / fig[N_SMALL]["main_rss"].median
    for n in (N_SMALL, N_LARGE):
        wall = fig[n]["wall"]
        rows.append(Row(case=f"score {n} files", metric="wall time", median=wall.median, low=wall.low,
                        high=wall.high, unit="s"))
    details = {
        "machine": machine(),
        "command": f"python -m monai_fracture score DIR --out FRESH --workers {workers} --no-progress",
        "data": f"{N_LARGE} generated DICOM radiographs, {SIZE}, uncompressed (generate_demo_dataset seed {SEED}); "
                f"{N_SMALL} = the first {N_SMALL} by path (hard links)",
        "outputs": "defaults: results.csv, manifest.json, journal, SR per study (+ KOS when positive)",
        "memory_notion": f"ratio on the peak {label}; sampled every {SAMPLE_S * 1000:.0f} ms; summed RSS counts "
                         "pages shared by forked workers once per process; ru_maxrss is the largest single process",
        "repeats": repeats,
        "repeats_note": "alternating 200, 2000 per repeat; few repeats because a 2,000-file run takes minutes",
        "runs": {str(n): [r.__dict__ for r in runs[n]] for n in runs},
    }
    return Section(name="memory", title=f"Peak memory scoring {N_SMALL} vs {N_LARGE} radiographs (CLI, {label})",
                   rows=rows, details=details)


def main(argv: list[str] | None = None) -> None:
    def add_arguments(parser) -> None:
        parser.add_argument("--workers", type=int, default=WORKERS, help="--workers of the scored CLI")

    standalone(__doc__.splitlines()[0], lambda ctx, args: run(ctx, workers=args.workers), argv, repeats=2,
               add_arguments=add_arguments)

if __name__ == "__main__":
    main()
