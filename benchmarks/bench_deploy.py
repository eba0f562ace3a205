"""The MONAI Deploy application per study, beside ``monai-fracture score`` on the same studies.

A MONAI Application Package runs once per study: the Informatics Gateway puts one study's
instances in the input folder, the Workflow Manager starts the app, the app loads, scores,
writes and exits. So each generated study (2048x2048 DX, uncompressed, 1-4 images, our phantom
generator) is copied into its own folder and run the way the SDK runs it, one study at a time:

    python -m monai_fracture.deploy -i STUDY -o FRESH_DIR -m MODEL

(the App SDK with holoscan: DICOM loader, series selector, our classifier and writer operators).
Beside it, on the same study folders, interleaved study by study so load hits both alike:

- ``score, one process per study``: ``python -m monai_fracture score STUDY --out FRESH_DIR``,
  the same job without the SDK: the like-for-like per-study comparison;
- ``score, all studies in one process``: ``monai-fracture score`` over the whole folder once,
  what a batch job would run instead (throughput only; no per-study latency).

Per-study latency is spawn to exit (median and p90 over the studies); throughput is studies
(and images) per second of wall time, one study after the other. CPU time (user + system of the
process and its children) is recorded beside each. The app's and the CLI's output file names
(content-derived SOP Instance UIDs) are compared per study: they must be the same objects.
One untimed warm-up run per case first (warm OS file cache and bytecode).

    python -m benchmarks.bench_deploy [--quick] [--images N]
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import BenchContext, Row, Section, Timing, machine, standalone

logger = logging.getLogger("benchmarks.bench_deploy")

N_IMAGES = 64  # about 25 studies of 1-4 images
N_QUICK = 12
SIZE = "2048x2048"
SEED = 3
DEPLOY_CASE = "MONAI Deploy app (App SDK), one process per study"
SCORE_CASE = "monai-fracture score, one process per study"
BATCH_CASE = "monai-fracture score, all studies in one process"


def prepare_studies(root: Path, n: int) -> list[Path]:
    """Generated DX studies, each alone in ``root/dx-N-studies/<k>/`` (the app reads a whole folder)."""
    from monai_fracture.data.synthetic import generate_demo_dataset

    generated, studies = root / f"dx-{n}", root / f"dx-{n}-studies"
    marker = root / f".generated-{n}-{SIZE}-{SEED}"
    if not marker.is_file():
        for folder in (generated, studies):
            if folder.exists():
                shutil.rmtree(folder)
        generate_demo_dataset(generated, n=n, modality="xr", seed=SEED, size=SIZE, compress=False)
        for k, study in enumerate(sorted(p for p in generated.glob("patient_*/study_*") if p.is_dir())):
            shutil.copytree(study, studies / f"{k:03d}")
        marker.write_text("ok\n")
    return sorted(p for p in studies.iterdir() if p.is_dir())


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _bigger_stack() -> None:
    """``ulimit -s 32768``, as docs/deploy.md advises for holoscan (silences its stack warning)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    wanted = 32768 * 1024
    if hard == resource.RLIM_INFINITY or hard >= wanted:
        resource.setrlimit(resource.RLIMIT_STACK, (wanted, hard))


def timed(command: list[str], out: Path) -> tuple[float, float]:
    """(wall s, CPU s) of ``command`` from spawn to exit, into a fresh ``out``."""
    if out.exists():
        shutil.rmtree(out)
    cpu = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_bigger_stack)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr.decode(errors='replace')[-3000:]}")
    return seconds, _children_cpu() - cpu


def output_names(folder: Path) -> set[str]:
    """``study-<hash>/SR_<uid>.dcm``-style names of every DICOM object written under ``folder``."""
    return {f"{p.parent.name}/{p.name}" for p in folder.rglob("*.dcm")}


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1] if len(values) > 1 else values[0]


def run(ctx: BenchContext, n_images: int | None = None) -> Section:
    from monai_fracture.model.classifier import default_model_path

    model_dir = default_model_path()
    studies = prepare_studies(ctx.data_dir / "deploy", n_images or (N_QUICK if ctx.quick else N_IMAGES))
    images = {study: sum(1 for p in study.rglob("image_*") if p.is_file()) for study in studies}
    work = ctx.out_dir / "deploy-runs"
    work.mkdir(parents=True, exist_ok=True)

    def deploy(study: Path, out: Path) -> list[str]:
        return [sys.executable, "-m", "monai_fracture.deploy", "-i", str(study), "-o", str(out), "-m", str(model_dir)]

    def score(study: Path, out: Path) -> list[str]:
        return [sys.executable, "-m", "monai_fracture", "score", str(study), "--out", str(out), "--model",
                str(model_dir), "--no-progress"]

    cases = {DEPLOY_CASE: deploy, SCORE_CASE: score}
    load_before = os.getloadavg()
    for command in cases.values():  # warm-up, untimed
        timed(command(studies[0], work / "warmup"), work / "warmup")
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    same_objects = 0
    for study in studies:
        names = {}
        for name, command in cases.items():
            out = work / ("deploy" if name == DEPLOY_CASE else "score")
            seconds, used = timed(command(study, out), out)
            wall[name].append(seconds)
            cpu[name].append(used)
            names[name] = output_names(out)
        if not names[DEPLOY_CASE]:
            raise RuntimeError(f"{study}: the Deploy app wrote no DICOM object")
        same_objects += names[DEPLOY_CASE] == names[SCORE_CASE]
    whole = work / "batch-input"
    shutil.rmtree(whole, ignore_errors=True)
    whole.mkdir(parents=True)
    for study in studies:
        (whole / study.name).symlink_to(study.resolve(), target_is_directory=True)
    batch_wall, batch_cpu = timed(score(whole, work / "batch"), work / "batch")
    load_after = os.getloadavg()
    shutil.rmtree(work, ignore_errors=True)

    n_studies, n_images_total = len(studies), sum(images.values())
    rows = []
    for name in cases:
        t = Timing(wall[name])
        row = Row(case=name, metric="per-study latency", median=t.median, low=t.low, high=t.high, unit="s",
                  extra={"p90_s": p90(wall[name]), "cpu_median_s": statistics.median(cpu[name])})
        if name == DEPLOY_CASE:
            row.baseline, row.ratio = SCORE_CASE, t.median / Timing(wall[SCORE_CASE]).median
            row.ratio_meaning = "Deploy app / score, median per-study latency (lower is better)"
        rows.append(row)
    for name in cases:
        rate = n_studies / sum(wall[name])
        rows.append(Row(case=name, metric="throughput, one study at a time", median=rate, low=rate, high=rate,
                        unit="studies/s", extra={"img_per_s": n_images_total / sum(wall[name])}))
    batch_rate = n_studies / batch_wall
    rows.append(Row(case=BATCH_CASE, metric="throughput", median=batch_rate, low=batch_rate, high=batch_rate,
                    unit="studies/s", baseline=DEPLOY_CASE, ratio=batch_rate * sum(wall[DEPLOY_CASE]) / n_studies,
                    ratio_meaning="batch score / Deploy app one study at a time (studies/s)",
                    extra={"img_per_s": n_images_total / batch_wall, "cpu_s": batch_cpu}))
    details = {
        "machine": machine(),
        "studies": n_studies,
        "images": n_images_total,
        "images_per_study": sorted(images.values()),
        "commands": {DEPLOY_CASE: "python -m monai_fracture.deploy -i STUDY -o FRESH_DIR -m MODEL",
                     SCORE_CASE: "python -m monai_fracture score STUDY --out FRESH_DIR --model MODEL --no-progress",
                     BATCH_CASE: "python -m monai_fracture score ALL_STUDIES --out FRESH_DIR --model MODEL --no-progress"},
        "latency_p90_s": {name: p90(values) for name, values in wall.items()},
        "wall_s": wall,
        "cpu_s": cpu,
        "batch_wall_s": batch_wall,
        "batch_cpu_s": batch_cpu,
        "studies_with_the_same_objects": same_objects,  # app vs CLI: same SOP Instance UIDs
        "load_average_before_after": [list(load_before), list(load_after)],
    }
    return Section(name="deploy", title="MONAI Deploy app per study, beside score (same studies)", rows=rows,
                   details=details)


def main(argv: list[str] | None = None) -> None:
    def add(parser):
        parser.add_argument("--images", type=int, default=None, help=f"images to generate (default {N_IMAGES}, "
                            f"{N_QUICK} with --quick), in studies of 1-4")

    section = standalone(__doc__.splitlines()[0], lambda ctx, args: run(ctx, args.images), argv, repeats=1,
                         add_arguments=add)
    for key in ("studies", "images", "latency_p90_s", "studies_with_the_same_objects"):
        print(f"{key}: {section.details[key]}")


if __name__ == "__main__":
    main()
