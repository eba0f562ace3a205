"""Cold-start latency: one radiograph, from ``python -m monai_fracture score`` starting to the SR on disk.

One 2048x2048 radiograph is generated once with our phantom generator (uncompressed) under
``benchmarks/out/data/cold_start/``. Each repeat starts a fresh interpreter:

    python -m monai_fracture score ONE --out FRESH_DIR

and the time runs from just before the process is spawned until it has exited; the SR file
under ``FRESH_DIR/dicom/`` must exist. "Cold" means a new process (imports, model load, worker
start-up); the OS file cache is warm (one untimed warm-up run first), as on a server that
scores one study at a time.

Cases, interleaved per repeat so load on a shared machine hits both alike:

- ``before``: the CLI's ``main()`` after a plain ``import monai`` (which walks into
  ``monai.deploy``: holoscan, cupy) and a normal interpreter shutdown: the behaviour before
  the two changes below;
- ``monai.deploy skipped``: ``main()`` alone, which imports MONAI without the MONAI Deploy App
  SDK (``monai_fracture.commands.score.import_monai_without_deploy``), normal shutdown;
- ``previous cli``: ``main()`` then ``gc.freeze()`` (shutdown skips garbage-collection passes
  over the ~500k objects torch/MONAI load), MONAI's full package walk minus monai.deploy: the
  program as shipped before the trimmed MONAI import;
- ``cli``: the program as shipped (``monai_fracture.cli.entry``): also MONAI imported without
  the training/tracking/plotting packages it would drag in (``monai_fracture.startup``).

Each run's CPU time (user + system, the process and its report workers) is recorded beside the
wall time: on a loaded machine it moves less than wall time.

One extra instrumented run gives the breakdown: interpreter start (spawn to first line of a
driver), imports (the command's own import step), model load (``Classifier``), header scan,
decode + preprocess + model, SR writing (in the report worker, and the main process's wait
for it), results.csv/manifest and exit. The driver calls the CLI's ``main`` in-process with
wrappers that take timestamps: nothing is added to the product.

    python -m benchmarks.bench_cold_start [--repeats 5] [--quick]
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import BenchContext, Row, Section, Timing, machine, standalone

logger = logging.getLogger("benchmarks.bench_cold_start")

SIZE = "2048x2048"
SEED = 0
BEFORE_CASE = "before: monai.deploy loaded, no gc.freeze"
NO_FREEZE_CASE = "monai.deploy skipped, no gc.freeze"

#: Before both changes: MONAI imported the plain way (walking into monai.deploy), then ``main()``
#: and a normal interpreter shutdown.
BEFORE = "import monai, sys; from monai_fracture.cli import main; sys.argv[0] = 'monai-fracture'; raise SystemExit(main())"
#: Only the first change: ``main()`` (MONAI without monai.deploy), normal shutdown (no gc.freeze).
NO_FREEZE = "import sys; from monai_fracture.cli import main; sys.argv[0] = 'monai-fracture'; raise SystemExit(main())"

#: The shipped program before the trimmed MONAI import: ``main()`` then ``gc.freeze()``.
PREVIOUS = ("import gc, sys; from monai_fracture.cli import main; sys.argv[0] = 'monai-fracture'; code = main(); "
            "gc.freeze(); raise SystemExit(code)")
PREVIOUS_CASE = "previous cli: full MONAI walk (monai.deploy skipped), gc.freeze"

#: Instrumented run: timestamps around the CLI's steps, written as JSON to argv[1].
DRIVER = r"""
import sys, time
T = {"driver_start": time.time()}
out_json, argv = sys.argv[1], sys.argv[2:]
from monai_fracture import startup
startup.owns_process = True  # as cli.entry() sets it
startup.import_monai_for_scoring()
T["monai_imported"] = time.time()
import monai_fracture.scoring as scoring
import monai_fracture.scoring.runner as runner
T["imports_done"] = time.time()
import monai_fracture.model.classifier as classifier_module
original_init = classifier_module.Classifier.__init__
def timed_init(self, *a, **k):  # patched on the class: as_classifier builds it inside its own module
    T.setdefault("model_load_start", time.time())
    original_init(self, *a, **k)
    T.setdefault("model_loaded", time.time())
classifier_module.Classifier.__init__ = timed_init
close_reports = runner._Run.close_reports
def timed_close(self):
    T["scoring_done"] = time.time()
    close_reports(self)
    T["reports_done"] = time.time()
runner._Run.close_reports = timed_close
from monai_fracture.cli import entry
sys.argv = ["monai-fracture", *argv]
code = entry()  # the shipped program: main(), then gc.freeze() before exit
T["main_returned"] = time.time()
import json
with open(out_json, "w") as handle:
    json.dump(T, handle)
raise SystemExit(code)
"""


def prepare_image(root: Path) -> Path:
    """One generated 2048x2048 radiograph (uncompressed), made once."""
    from monai_fracture.data.synthetic import generate_demo_dataset

    marker = root / f".generated-1-{SIZE}-{SEED}"
    folder = root / "one"
    if not marker.is_file():
        if folder.exists():
            shutil.rmtree(folder)
        generate_demo_dataset(folder, n=1, modality="xr", seed=SEED, size=SIZE, compress=False)
        marker.write_text("ok\n")
    (image,) = sorted(p for p in folder.rglob("image_*") if p.is_file())
    return image


def _sr_files(out: Path) -> list[Path]:
    return sorted((out / "dicom").glob("study-*/SR_*.dcm"))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cold_run(prefix: list[str], image: Path, out: Path) -> tuple[float, float]:
    """(wall s, CPU s) of ``prefix + [score, image, --out, out]`` from spawn to exit; checks the SR."""
    if out.exists():
        shutil.rmtree(out)
    command = [*prefix, "score", str(image), "--out", str(out), "--no-progress"]
    cpu = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - started
    cpu = _children_cpu() - cpu
    if done.returncode != 0 or not _sr_files(out):
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode} (SR: {_sr_files(out)}):\n"
                           f"{done.stderr.decode(errors='replace')[-2000:]}")
    return seconds, cpu


def breakdown(image: Path, work: Path) -> dict:
    """Phases of one instrumented cold run, in seconds."""
    out, stamps = work / "instrumented", work / "stamps.json"
    if out.exists():
        shutil.rmtree(out)
    spawned = time.time()
    done = subprocess.run([sys.executable, "-c", DRIVER, str(stamps), "score", str(image), "--out", str(out),
                           "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    exited = time.time()
    if done.returncode != 0 or not _sr_files(out):
        raise RuntimeError(f"instrumented run failed ({done.returncode}):\n{done.stderr.decode(errors='replace')[-2000:]}")
    t = json.loads(stamps.read_text())
    timings = json.loads((out / "manifest.json").read_text())["timings"]
    phases = {
        "interpreter_start_s": t["driver_start"] - spawned,
        "import_torch_monai_s": t["monai_imported"] - t["driver_start"],
        "import_rest_s": t["imports_done"] - t["monai_imported"],  # our scoring modules, highdicom, pydicom ...
        "model_load_s": t["model_loaded"] - t["model_load_start"],
        "walk_and_header_scan_s": timings.get("scan_s", 0.0),
        "decode_preprocess_model_s": timings.get("score_s", 0.0),
        "of_which_model_s": timings.get("model_s", 0.0),
        "sr_build_and_write_in_worker_s": timings.get("reports_s", 0.0),
        "wait_for_sr_in_main_s": t["reports_done"] - t["scoring_done"],
        "csv_manifest_s": t["main_returned"] - t["reports_done"],
        "exit_s": exited - t["main_returned"],
        "total_s": exited - spawned,
    }
    phases["other_in_main_s"] = phases["total_s"] - sum(
        v for k, v in phases.items()
        if k in ("interpreter_start_s", "import_torch_monai_s", "import_rest_s", "model_load_s",
                 "walk_and_header_scan_s", "decode_preprocess_model_s", "wait_for_sr_in_main_s",
                 "csv_manifest_s", "exit_s"))
    return {k: round(v, 4) for k, v in phases.items()}


def run(ctx: BenchContext) -> Section:
    import pydicom

    root = ctx.data_dir / "cold_start"
    root.mkdir(parents=True, exist_ok=True)
    image = prepare_image(root)
    header = pydicom.dcmread(image, stop_before_pixels=True)
    work = ctx.out_dir / "cold-start-runs"
    work.mkdir(parents=True, exist_ok=True)
    cases = {
        BEFORE_CASE: [sys.executable, "-c", BEFORE],
        NO_FREEZE_CASE: [sys.executable, "-c", NO_FREEZE],
        PREVIOUS_CASE: [sys.executable, "-c", PREVIOUS],
        "cli": [sys.executable, "-m", "monai_fracture"],
    }
    repeats = max(1, 3 if ctx.quick else ctx.repeats)
    load_before = os.getloadavg()
    for prefix in cases.values():  # warm the file cache (and bytecode), untimed
        cold_run(prefix, image, work / "warmup")
    values: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, prefix in cases.items():
            wall, used = cold_run(prefix, image, work / "out")
            values[name].append(wall)
            cpu[name].append(used)
    phases = breakdown(image, work)
    load_after = os.getloadavg()
    shutil.rmtree(work, ignore_errors=True)

    timing = {name: Timing(v) for name, v in values.items()}
    rows = []
    for name in cases:
        t = timing[name]
        row = Row(case=name, metric="cold start", median=t.median, low=t.low, high=t.high, unit="s")
        if name != BEFORE_CASE:
            row.baseline, row.ratio = BEFORE_CASE, t.median / timing[BEFORE_CASE].median
            row.ratio_meaning = "cold start / before both changes (lower is better)"
        rows.append(row)
    for name in cases:
        t = Timing(cpu[name])
        rows.append(Row(case=f"{name}: CPU time (user + system, incl. report workers)", metric="cold start CPU",
                        median=t.median, low=t.low, high=t.high, unit="s"))
    details = {
        "machine": machine(),
        "command": "python -m monai_fracture score ONE --out FRESH_DIR --no-progress (default model, SR written)",
        "image": {"rows": int(header.Rows), "columns": int(header.Columns), "modality": str(header.Modality),
                  "transfer_syntax": header.file_meta.TransferSyntaxUID.name},
        "repeats": repeats,
        "timing": "spawn to exit, one untimed warm-up run per case first (warm OS file cache); cases interleaved",
        "values_s": values,
        "cpu_s": cpu,
        "load_average_before_after": [list(load_before), list(load_after)],  # 1/5/15 min: was the machine quiet?
        "breakdown_s": phases,
        "breakdown_note": "one extra instrumented run of the shipped CLI path (timestamps in a driver script; "
                          "SR time inside the report worker from manifest.json)",
    }
    return Section(name="cold_start", title="Cold start: one 2048x2048 radiograph, CLI start to SR written",
                   rows=rows, details=details)


def main(argv: list[str] | None = None) -> None:
    section = standalone(__doc__.splitlines()[0], lambda ctx, args: run(ctx), argv)
    print("breakdown (s), one instrumented run:")
    for key, value in section.details["breakdown_s"].items():
        print(f"  {key:34s} {value:8.3f}")

if __name__ == "__main__":
    main()
