"""Where a scoring run with DICOM outputs spends its time: cProfile of ``score_paths`` in one process.

Decoding (``workers=0``) and the report jobs (an inline executor instead of the report
processes) run in the profiled process, so every stage is seen; the run is therefore slower than
a real one, and the shares, not the seconds, are what to read. ``--threshold 0`` makes every
image positive (each needs a heatmap), the worst case for the evidence.

    python -m benchmarks.profile_outputs DATA_FOLDER --threshold 0 --limit 16
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import tempfile
from concurrent.futures import Executor, Future
from pathlib import Path

#: (stage, function name in the profile, file it is defined in): cumulative time of each
STAGES = (
    ("evidence: heatmaps + regions (localise_batch)", "localise_batch", "scoring/stream.py"),
    ("  of it the batched CAM pass (class_activation_maps)", "class_activation_maps", "model/gradcam.py"),
    ("  of it the hot region (and the SC overlay when asked)", "_evidence", "scoring/localise.py"),
    ("evidence one image at a time (localise: the code before the batched pass)", "localise", "scoring/localise.py"),
    ("choosing the backend (Classifier.prepare)", "prepare", "model/classifier.py"),
    ("decode + preprocess (read_and_preprocess)", "read_and_preprocess", "scoring/loader.py"),
    ("model calls (Classifier.predict)", "predict", "model/classifier.py"),
    ("SR, KOS, GSPS built and written (write_outputs_from_files)", "write_outputs_from_files", "reports/study.py"),
)


class InlineExecutor(Executor):
    """Runs each job at submit, in this process, so the profiler sees the report jobs."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - handed to the caller as the job's outcome
            future.set_exception(err)
        return future


def cumulative(stats: pstats.Stats, name: str, filename: str) -> float:
    return sum(entry[3] for (path, _, function), entry in stats.stats.items()  # type: ignore[attr-defined]
               if function == name and path.endswith(filename))


def main(argv: list[str] | None = None) -> int:
    import monai_fracture.scoring.runner as runner
    from monai_fracture.model import Classifier
    from monai_fracture.model.classifier import default_model_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder of DICOM files to score")
    parser.add_argument("--threshold", type=float, help="decision threshold (0: every image positive)")
    parser.add_argument("--limit", type=int, default=0, help="score only the first N files (copied to a temp folder)")
    parser.add_argument("--model", type=Path, help="model (default: the bundle's)")
    parser.add_argument("--stats", type=Path, help="also save the raw profile here (pstats format)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="profile-outputs-"))
    data = args.data
    if args.limit:
        files = sorted(p for p in args.data.rglob("*") if p.is_file() and p.name.startswith("image_"))[: args.limit]
        data = work / "in"
        for path in files:
            target = data / path.relative_to(args.data)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    classifier = Classifier(args.model or default_model_path(), threshold=args.threshold)
    runner.report_pool = lambda workers: InlineExecutor()  # type: ignore[assignment]
    profile = cProfile.Profile()
    profile.enable()
    summary = runner.score_paths([data], work / "out", model=classifier, workers=0, progress=False)
    profile.disable()
    if args.stats:
        profile.dump_stats(args.stats)
    stats = pstats.Stats(profile)
    total = cumulative(stats, "score_paths", "scoring/runner.py")
    table = summary.results
    scored = table[table["status"] == "scored"]
    positives = int((scored["prediction"] == "1").sum())
    sys.stdout.write(f"{len(scored)} images scored, {positives} positive, {len(summary.dicom_outputs)} studies with "
                     f"outputs; profiled total {total:.1f} s\n")
    for label, name, filename in STAGES:
        seconds = cumulative(stats, name, filename)
        sys.stdout.write(f"{label:62s} {seconds:8.2f} s {seconds / total:6.1%}\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
