"""DICOMweb vs folder input: the same generated radiographs scored from a folder and from Orthanc over
QIDO-RS/WADO-RS (a benchmark, not a test).

Orthanc (with its DICOMweb plugin) runs inside a private network namespace, as in the tests, with
the files C-STOREd into it first (untimed). In the same namespace and process, each repeat scores
the files with ``score_paths`` from the folder and with ``score_dicomweb`` from Orthanc (search,
download into the spool, score, spool removed), into fresh output folders, SR/KOS/GSPS written,
the same ``Classifier`` (fp32) for both. Cases alternate, so load drift hits both alike.

    python -m benchmarks.bench_dicomweb [--n 200] [--size 512] [--repeats 3]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import BenchContext, Row, Section, Timing, machine, standalone

HERE = Path(__file__).resolve().parent.parent


def _drive(spec: dict) -> dict:
    """Inside the namespace: Orthanc up, files stored, then the timed repeats."""
    sys.path.insert(0, str(HERE / "tests"))
    from helpers.orthanc import ORTHANC_AET, ORTHANC_DICOM_PORT, Orthanc, store_files  # tests/helpers/orthanc.py

    from monai_fracture.commands.score import import_monai_without_deploy

    import_monai_without_deploy()
    from monai_fracture.model import Classifier
    from monai_fracture.scoring import score_paths
    from monai_fracture.scoring.dicomweb_run import score_dicomweb
    from monai_fracture.sources.dicomweb import DicomwebSource

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    work = Path(spec["work"])
    orthanc = Orthanc(work / "orthanc")
    orthanc.start()
    try:
        files = sorted(Path(p) for p in spec["files"])
        for start in range(0, len(files), 50):
            statuses = store_files(files[start:start + 50], ORTHANC_DICOM_PORT, ORTHANC_AET)
            assert all(s == 0 for s in statuses), statuses
        classifier = Classifier(spec["model"], backend="fp32")
        source = DicomwebSource(f"dicomweb+{orthanc.url}/dicom-web")
        times: dict[str, list[float]] = {"folder": [], "dicomweb": []}
        counts: dict[str, dict] = {}
        for repeat in range(-1, spec["repeats"]):  # repeat -1: warm-up (model, file cache), untimed
            for case in ("folder", "dicomweb"):
                out = work / f"{case}-{repeat}"
                started = time.perf_counter()
                if case == "folder":
                    summary = score_paths([spec["data"]], out, model=classifier, progress=False)
                    counts[case] = summary.counts
                else:
                    _, counts[case], _ = score_dicomweb(source, out, studies=source.studies({}), model=classifier,
                                                        progress=False)
                elapsed = time.perf_counter() - started
                shutil.rmtree(out, ignore_errors=True)
                if repeat >= 0:
                    times[case].append(elapsed)
        return {"times": times, "counts": counts}
    finally:
        orthanc.stop()


def run(ctx: BenchContext, n: int | None = None, size: int = 512) -> Section:
    from benchmarks.score_folder import benchmark_model, prepare_data

    sys.path.insert(0, str(HERE / "tests"))
    from helpers.orthanc import _unshare_prefix, namespace_unavailable_reason

    reason = namespace_unavailable_reason()
    if reason:
        raise RuntimeError(f"DICOMweb benchmark needs Orthanc in a network namespace: {reason}")
    n = n or (40 if ctx.quick else 200)
    data = ctx.data_dir / f"dicomweb_{n}_{size}"
    files = prepare_data(data, n, size, compress=True)
    work = ctx.out_dir / "dicomweb-runs"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    model = benchmark_model(None, files[:32], work)
    spec = {"work": str(work), "files": [str(f) for f in files], "data": str(data), "model": str(model),
            "repeats": max(1, ctx.repeats if not ctx.quick else 1)}
    (work / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run(_unshare_prefix() + [sys.executable, "-m", "benchmarks.bench_dicomweb", "--drive",
                                               str(work / "spec.json")], capture_output=True, text=True,
                          cwd=HERE, env={**os.environ, "PYTHONPATH": str(HERE)})
    result_path = work / "result.json"
    if proc.returncode != 0 or not result_path.is_file():
        raise RuntimeError(f"DICOMweb benchmark driver failed (rc {proc.returncode}): {(proc.stdout + proc.stderr)[-3000:]}")
    result = json.loads(result_path.read_text())
    shutil.rmtree(work, ignore_errors=True)
    folder, dicomweb = Timing(result["times"]["folder"]), Timing(result["times"]["dicomweb"])
    rows = [
        Row.rate("folder input", folder, n),
        Row.rate("DICOMweb input (QIDO-RS + WADO-RS from Orthanc on loopback)", dicomweb, n, baseline="folder input",
                 ratio=dicomweb.median / folder.median, ratio_meaning="DICOMweb time / folder time (lower is better)"),
    ]
    details = {"machine": machine(), "images": n, "size": f"{size}x{size}", "model": str(model), "backend": "fp32",
               "counts": result["counts"], "values_s": result["times"],
               "timing": "one process in a network namespace; folder and DICOMweb cases alternate; one untimed warm-up each"}
    return Section(name="dicomweb", title=f"DICOMweb vs folder input: {n} generated {size}x{size} radiographs",
                   rows=rows, details=details)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--drive"]:
        spec = json.loads(Path(argv[1]).read_text())
        result = _drive(spec)
        Path(spec["work"], "result.json").write_text(json.dumps(result))
        return

    def add(parser):
        parser.add_argument("--n", type=int, default=None)
        parser.add_argument("--size", type=int, default=512)

    standalone(__doc__.splitlines()[0], lambda ctx, args: run(ctx, args.n, args.size), argv, repeats=3,
               add_arguments=add)


if __name__ == "__main__":
    main()
