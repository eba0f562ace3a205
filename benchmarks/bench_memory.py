"""Peak memory of ``monai-fracture score`` on 200 and on 2,000 radiographs (target: <= 1.0 GB, ratio <= 1.1).

Scoring streams (docs/scoring.md): only a small record per file is held, never decoded images,
so memory should not grow with the folder, and the whole tree should stay under 1.0 GB of summed
PSS (issue 15). This section checks both on the real CLI:

- 200 DICOM DX radiographs of 2048x2048 are rendered once with our phantom generator
  (``generate_demo_dataset``, uncompressed, several views per study) under
  ``benchmarks/out/data/memory/first-200``; ``all-2000`` holds those (hard links) and nine copies
  of each with new patient, study, series and SOP identities (rendering 2,000 would take hours).
- ``python -m monai_fracture -v score DIR --out FRESH --workers 2 --no-progress`` runs as a child
  process with the default outputs (results.csv, manifest, journal, an SR per study plus a KOS and
  a Grad-CAM region when an image is positive) and an empty backend cache, so the 2,000-file run
  times every candidate backend as a first run does. Every ~50 ms the whole process tree (the CLI,
  its DataLoader workers, its report worker) is sampled from ``/proc/PID/smaps_rollup``.
- Per run: peak of the summed PSS (shared pages split between the processes that map them, so
  forked workers' copy-on-write pages of torch/MONAI are counted once), of the summed RSS (counts
  them once per process: an upper bound), the main process's PSS/USS/RSS peaks, the children's,
  the peak per phase (start-up until the log line "runs on backend", then streaming), the wall
  time, and a per-process timeline (the largest-sum sample of each second) in ``details``.

The limit and the ratio (2,000 / 200) are taken on the summed PSS peak, the most honest figure of
what the tree really holds; the summed-RSS ratio is in ``extra``. Runs alternate 200, 2,000, 200,
2,000 so drift on a shared machine hits both sizes alike; two repeats per size (one with ``--quick``).

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
SIZE = "2048x2048"
SEED = 0
WORKERS = 2
SAMPLE_S = 0.05
TARGET = 1.1
LIMIT_MIB = 1000.0 * 1000.0 * 1000.0 / (1024.0 * 1024.0)  # 1.0 GB
MIB = 1024.0 * 1024.0


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("image_*") if p.is_file())


#: Every identifier a copy must change so it is a different image of a different study and patient.
_UID_TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")


def _replicate(source: Path, target: Path, copy: int) -> None:
    """``source`` as a new image: its own patient, study, series and SOP identity (deterministic), same pixels."""
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(source)
    for keyword in _UID_TAGS:
        if keyword in ds:
            setattr(ds, keyword, generate_uid(entropy_srcs=["bench-memory", str(copy), str(ds[keyword].value)]))
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = f"{ds.PatientID}-{copy}"
    if "AccessionNumber" in ds:
        ds.AccessionNumber = f"{str(ds.AccessionNumber)[:12]}{copy:04d}"
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target, enforce_file_format=True)


def prepare_data(root: Path) -> tuple[Path, Path]:
    """``root/first-200`` (200 generated radiographs) and ``root/all-2000`` (those 200, hard links, plus
    nine copies of each with new patient/study/series/SOP identities), generated once.

    Rendering a 2048x2048 phantom costs seconds of CPU, so only 200 are rendered; the copies are
    distinct DICOM instances in distinct studies (what the journal, collector and reports see), with
    the same pixels, which memory does not depend on.
    """
    from monai_fracture.data.synthetic import generate_demo_dataset

    large, small = root / f"all-{N_LARGE}", root / f"first-{N_SMALL}"
    marker = root / f".generated-{N_SMALL}x{N_LARGE // N_SMALL}-{SIZE}-{SEED}"
    if not marker.is_file():
        for folder in (large, small):
            if folder.exists():
                shutil.rmtree(folder)
        started = time.perf_counter()
        generate_demo_dataset(small, n=N_SMALL, modality="xr", seed=SEED, size=SIZE, compress=False,
                              workers=max(1, min(4, os.cpu_count() or 1)))
        files = _images(small)
        if len(files) != N_SMALL:
            raise RuntimeError(f"expected {N_SMALL} images under {small}, found {len(files)}")
        for path in files:
            target = large / "copy-0" / path.relative_to(small)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
            for copy in range(1, N_LARGE // N_SMALL):
                _replicate(path, large / f"copy-{copy}" / path.relative_to(small), copy)
        if len(_images(large)) != N_LARGE:
            raise RuntimeError(f"expected {N_LARGE} images under {large}, found {len(_images(large))}")
        marker.write_text("ok\n")
        logger.info("generated %d radiographs (%d rendered) in %.0f s", N_LARGE, N_SMALL,
                    time.perf_counter() - started)
    return small, large


#: PSS needs /proc/PID/smaps_rollup (Linux 4.14+); without it the ratio falls back to summed RSS.
HAS_ROLLUP = os.path.exists("/proc/self/smaps_rollup")


@dataclass
class ProcessMemory:
    """One process at one instant, in bytes; PSS and USS are None without smaps_rollup."""

    rss: int = 0
    pss: int | None = None
    uss: int | None = None


def _rollup(pid: int) -> ProcessMemory:
    """RSS, PSS and USS (private clean + dirty) of one process. A process that has just exited (gone,
    or a zombie with no mappings) counts 0."""
    if not HAS_ROLLUP:
        import psutil

        try:
            return ProcessMemory(psutil.Process(pid).memory_info().rss)
        except psutil.Error:
            return ProcessMemory()
    fields = {"Rss:": 0, "Pss:": 0, "Private_Clean:": 0, "Private_Dirty:": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                key = line.split(maxsplit=1)[0]
                if key in fields:
                    fields[key] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return ProcessMemory(fields["Rss:"], fields["Pss:"], fields["Private_Clean:"] + fields["Private_Dirty:"])


#: Log lines of ``score -v`` that mark phases on the timeline (substring -> phase that starts there).
PHASE_MARKS = (("runs on backend", "streaming"),)


@dataclass
class RunMemory:
    files: int
    wall_s: float
    peak_rss_sum: int
    peak_pss_sum: int | None
    peak_main_rss: int
    peak_main_pss: int | None
    peak_main_uss: int | None
    peak_children_pss: int | None
    ru_maxrss: int
    max_processes: int
    samples: int
    returncode: int
    images_per_s: float
    #: peak summed PSS (else RSS) per phase: "start-up" until the backend is chosen, then "streaming"
    phase_peaks_mib: dict[str, int]
    #: (seconds, summed PSS (else RSS) MiB, main's MiB, each child's MiB): the largest-sum sample of each ~1 s
    timeline: list[tuple[float, int, int, tuple[int, ...]]]
    events: list[tuple[float, str]]  # (seconds, log line) of the phase marks


def _stderr_reader(stream, started: float, events: list[tuple[float, str]], tail: list[str]) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip()
        tail.append(line)
        del tail[:-50]
        if any(mark in line for mark, _ in PHASE_MARKS):
            events.append((round(time.perf_counter() - started, 2), line[-200:]))


def score_and_sample(folder: Path, out: Path, workers: int, window_s: float = 1.0) -> RunMemory:
    """Run the CLI on ``folder`` (fresh output and backend cache) and sample its process tree until it exits.

    The backend cache is emptied so every run does what a first run does (the 2,000-file run
    times the candidate backends, the 200-file one takes the default order): the worst case.
    """
    import psutil
    import tempfile
    import threading

    if out.exists():
        shutil.rmtree(out)
    cache = Path(tempfile.mkdtemp(prefix="bench-memory-cache-"))
    command = [sys.executable, "-m", "monai_fracture", "-v", "score", str(folder), "--out", str(out),
               "--workers", str(workers), "--no-progress"]
    env = {**os.environ, "MONAI_FRACTURE_CACHE": str(cache)}
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    events: list[tuple[float, str]] = []
    tail: list[str] = []
    reader = threading.Thread(target=_stderr_reader, args=(child.stderr, started, events, tail), daemon=True)
    reader.start()
    parent = psutil.Process(child.pid)
    peak = {"rss": 0, "pss": 0, "main_rss": 0, "main_pss": 0, "main_uss": 0, "children_pss": 0, "procs": 0}
    has_pss = HAS_ROLLUP
    samples = 0
    raw: list[tuple[float, int, int, tuple[int, ...]]] = []
    status = rusage = None
    while True:
        try:
            tree = [parent] + parent.children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        if tree:
            now = time.perf_counter() - started
            memories = [_rollup(proc.pid) for proc in tree]
            main = memories[0]
            rss_sum = sum(m.rss for m in memories)
            pss_sum = sum(m.pss or 0 for m in memories)
            honest_sum, main_honest = (pss_sum, main.pss or 0) if has_pss else (rss_sum, main.rss)
            children = tuple(round(((m.pss if has_pss else m.rss) or 0) / MIB) for m in memories[1:])
            raw.append((now, honest_sum, main_honest, children))
            samples += 1
            peak["rss"] = max(peak["rss"], rss_sum)
            peak["pss"] = max(peak["pss"], pss_sum)
            peak["main_rss"] = max(peak["main_rss"], main.rss)
            peak["main_pss"] = max(peak["main_pss"], main.pss or 0)
            peak["main_uss"] = max(peak["main_uss"], main.uss or 0)
            peak["children_pss"] = max(peak["children_pss"], pss_sum - (main.pss or 0))
            peak["procs"] = max(peak["procs"], len(tree))
        pid, status, rusage = os.wait4(child.pid, os.WNOHANG)
        if pid == child.pid:
            break
        time.sleep(SAMPLE_S)
    wall = time.perf_counter() - started
    reader.join(timeout=5)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.stderr:
        child.stderr.close()
    shutil.rmtree(cache, ignore_errors=True)
    if child.returncode != 0 or not (out / "results.csv").is_file():
        raise RuntimeError(f"{' '.join(command)} exited {child.returncode}:\n" + "\n".join(tail[-30:]))
    # phases: start-up until the backend is chosen (first mark), streaming after it
    switch = events[0][0] if events else wall
    phases = {"start-up": max((v for t, v, _, _ in raw if t < switch), default=0),
              "streaming": max((v for t, v, _, _ in raw if t >= switch), default=0)}
    timeline: list[tuple[float, int, int, tuple[int, ...]]] = []
    for t, total, main_value, children in raw:  # the sample with the largest sum in each window
        point = (round(t, 1), round(total / MIB), round(main_value / MIB), children)
        if timeline and t - timeline[-1][0] < window_s:
            if point[1] > timeline[-1][1]:
                timeline[-1] = (timeline[-1][0],) + point[1:]
        else:
            timeline.append(point)
    files = len(_images(folder))
    return RunMemory(
        files=files, wall_s=wall, peak_rss_sum=peak["rss"], peak_pss_sum=peak["pss"] if has_pss else None,
        peak_main_rss=peak["main_rss"], peak_main_pss=peak["main_pss"] if has_pss else None,
        peak_main_uss=peak["main_uss"] if has_pss else None,
        peak_children_pss=peak["children_pss"] if has_pss else None, ru_maxrss=rusage.ru_maxrss * 1024,
        max_processes=peak["procs"], samples=samples, returncode=child.returncode, images_per_s=files / wall,
        phase_peaks_mib={k: round(v / MIB) for k, v in phases.items()}, timeline=timeline, events=events)


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
            logger.info("%d files: PSS %.0f MiB (main %.0f MiB), RSS %.0f MiB, %.0f s, phases %s", n,
                        (result.peak_pss_sum or 0) / MIB, (result.peak_main_pss or 0) / MIB,
                        result.peak_rss_sum / MIB, result.wall_s, result.phase_peaks_mib)
            runs[n].append(result)
    shutil.rmtree(scratch, ignore_errors=True)

    def figures(n: int) -> dict[str, Timing | None]:
        return {
            "pss": _mib_timing([r.peak_pss_sum for r in runs[n]]),
            "rss": _mib_timing([r.peak_rss_sum for r in runs[n]]),
            "main_pss": _mib_timing([r.peak_main_pss for r in runs[n]]),
            "main_uss": _mib_timing([r.peak_main_uss for r in runs[n]]),
            "main_rss": _mib_timing([r.peak_main_rss for r in runs[n]]),
            "children_pss": _mib_timing([r.peak_children_pss for r in runs[n]]),
            "wall": Timing([r.wall_s for r in runs[n]]),
        }

    fig = {n: figures(n) for n in runs}
    honest = "pss" if fig[N_SMALL]["pss"] is not None and fig[N_LARGE]["pss"] is not None else "rss"
    label = {"pss": "summed PSS of the process tree", "rss": "summed RSS of the process tree"}[honest]
    main_key = "main_pss" if honest == "pss" else "main_rss"
    rows: list[Row] = []
    for n in (N_SMALL, N_LARGE):
        f = fig[n]
        peak = f[honest]
        extra = {k: v.to_dict() for k, v in f.items() if v is not None and k != honest}
        extra["max_processes"] = max(r.max_processes for r in runs[n])
        extra["samples"] = [r.samples for r in runs[n]]
        extra["phase_peaks_mib"] = [r.phase_peaks_mib for r in runs[n]]
        rows.append(Row(case=f"score {n} files", metric=f"peak memory ({honest})", median=peak.median,
                        low=peak.low, high=peak.high, unit="MiB", target=f"<= {LIMIT_MIB:.0f}",
                        passed=peak.median <= LIMIT_MIB, extra=extra))
    ratio = fig[N_LARGE][honest].median / fig[N_SMALL][honest].median
    rss_ratio = fig[N_LARGE]["rss"].median / fig[N_SMALL]["rss"].median
    rows[1].baseline = rows[0].case
    rows[1].ratio = ratio
    rows[1].ratio_meaning = (f"peak {label} at {N_LARGE} files / at {N_SMALL} files (lower is better); "
                             f"ratio target <= {TARGET}")
    rows[1].passed = rows[1].passed and ratio <= TARGET
    rows[1].target = f"<= {LIMIT_MIB:.0f} MiB, ratio <= {TARGET}"
    rows[1].extra["ratio_summed_rss"] = rss_ratio
    rows[1].extra["ratio_main"] = fig[N_LARGE][main_key].median / fig[N_SMALL][main_key].median
    for n in (N_SMALL, N_LARGE):
        main = fig[n][main_key]
        rows.append(Row(case=f"score {n} files", metric=f"main process peak ({main_key})", median=main.median,
                        low=main.low, high=main.high, unit="MiB"))
    for n in (N_SMALL, N_LARGE):
        wall = fig[n]["wall"]
        rows.append(Row(case=f"score {n} files", metric="wall time", median=wall.median, low=wall.low,
                        high=wall.high, unit="s"))
    details = {
        "machine": machine(),
        "command": f"python -m monai_fracture -v score DIR --out FRESH --workers {workers} --no-progress "
                   "(MONAI_FRACTURE_CACHE empty, so the backend choice is measured as on a first run)",
        "data": f"{N_SMALL} generated DICOM DX radiographs, {SIZE}, uncompressed (generate_demo_dataset seed {SEED}); "
                f"{N_LARGE} = those plus {N_LARGE // N_SMALL - 1} copies of each with new patient/study/series/SOP "
                "UIDs",
        "outputs": "defaults: results.csv, manifest.json, journal, SR per study (+ KOS when positive), "
                   "Grad-CAM region of each positive image",
        "memory_notion": f"ratio on the peak {label}; sampled every {SAMPLE_S * 1000:.0f} ms; summed RSS counts "
                         "pages shared by forked workers once per process; ru_maxrss (in runs) is not a figure "
                         "of the run: Linux keeps "
                         "the high-water mark of the process that exec'd it (this benchmark); "
                         "USS = private pages of the main process",
        "phases": "start-up = from exec until the log line 'runs on backend' (imports, model, first batch, "
                  "backend choice); streaming = after it",
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
