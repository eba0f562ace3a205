"""``make bench``: every benchmark section, one results.json and one printed table.

Sections (each a module with ``run(ctx) -> Section``):
  preprocessing  2048^2 DX decode + preprocessing by transfer syntax vs raw pydicom
  inference      model forward per backend (fp32, channels_last, bf16, compile, TorchScript, ONNX)
  training       the bundle's trainer vs a bare PyTorch loop on the same model and data
  scoring        end-to-end ``score_paths`` vs its serial bound and a naive loop
  memory         peak memory scoring 200 vs 2,000 files
  cold_start     one radiograph, CLI start to SR written
  peer           ours with all DICOM outputs vs a plain MONAI pipeline (LoadImage, DataLoader, eager fp32)
  deploy         the MONAI Deploy app one study at a time vs score on the same studies
  engines        local vs Ray Data engine on the same 500 files
  dicomweb       the same files scored from a folder and from Orthanc over DICOMweb

    python -m benchmarks.run [--only inference scoring] [--quick] [--device cuda]

Figures are medians over repeats with min/max; ratios compare figures measured in the same
run. The machine is recorded beside them. Long: about 20-30 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.common import OUT_DIR, BenchContext, Row, Section, machine

SECTIONS = {
    "preprocessing": "benchmarks.bench_preprocessing",
    "inference": "benchmarks.bench_inference",
    "training": "benchmarks.bench_training",
    "scoring": "benchmarks.score_folder",
    "memory": "benchmarks.bench_memory",
    "cold_start": "benchmarks.bench_cold_start",
    "peer": "benchmarks.bench_peer",
    "deploy": "benchmarks.bench_deploy",
    "engines": "benchmarks.bench_engines",
    "dicomweb": "benchmarks.bench_dicomweb",
}
RESULTS = Path("benchmarks/results.json")


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def table(sections: list[Section], markdown: bool = False) -> str:
    """Every row as a plain-text table (printed) or a Markdown table (``results.md``, docs/performance.md)."""
    import pandas as pd

    records = []
    for section in sections:
        for row in section.rows:
            records.append({
                "section": section.name,
                "case": row.case,
                "median": f"{_fmt(row.median)} {row.unit}",
                "min-max": f"{_fmt(row.low)}-{_fmt(row.high)}" if row.low != row.high else "",
                "ratio": f"{row.ratio:.2f} {row.ratio_meaning or ''}".strip() if row.ratio is not None else "",
                "target": row.target or "",
                "ok": {True: "yes", False: "NO", None: ""}[row.passed],
            })
    if not records:
        return "(no rows)"
    frame = pd.DataFrame.from_records(records)
    if markdown:
        lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
        lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
        return "\n".join(lines)
    return frame.to_string(index=False)


def sections_from(results: dict) -> list[Section]:
    """``Section`` objects back from a results.json (to redraw the table of every section run so far)."""
    out = []
    for data in results.get("sections", {}).values():
        rows = [Row(**row) for row in data.get("rows", [])]
        out.append(Section(data["name"], data["title"], rows, data.get("details", {}), data.get("seconds")))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), help="run these sections only")
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats (a smoke run, not figures)")
    parser.add_argument("--device", default="cpu", help="torch device for model work (default cpu)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats behind each median (default 5)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    args = parser.parse_args(argv)
    from monai_fracture.commands.score import import_monai_without_deploy

    import_monai_without_deploy()  # as the score CLI does: no holoscan/cupy in the measured process
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("highdicom", "monai_fracture.scoring.runner", "monai_fracture.model.package"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    ctx = BenchContext(out_dir=OUT_DIR, device=args.device, repeats=2 if args.quick else args.repeats, quick=args.quick)
    names = args.only or list(SECTIONS)
    results: dict = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
                     "quick": args.quick, "device": args.device, "repeats": ctx.repeats, "sections": {}, "errors": {}}
    if args.out.is_file() and args.only:  # a partial run updates the sections it ran
        previous = json.loads(args.out.read_text())
        if previous.get("machine", {}).get("cpu") == results["machine"]["cpu"]:
            results["sections"] = previous.get("sections", {})
    done: list[Section] = []
    for name in names:
        logging.getLogger("benchmarks.run").info("section %s", name)
        started = time.perf_counter()
        try:
            section = importlib.import_module(SECTIONS[name]).run(ctx)
        except Exception as err:  # one broken section must not hide the others' figures
            traceback.print_exc()
            results["errors"][name] = f"{type(err).__name__}: {err}"
            continue
        section.seconds = section.seconds or time.perf_counter() - started
        results["sections"][name] = section.to_dict()
        done.append(section)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    results["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    info = results["machine"]
    header = (f"Machine: {info['cpu']}, {info['usable_cpus']} usable CPUs, torch threads {info['torch_threads']}, "
              f"GPU {info['gpu'] or 'none'}; device {args.device}; torch {info['versions']['torch']}, "
              f"onnxruntime {info['versions']['onnxruntime']}; finished {results['finished']}")
    args.out.with_suffix(".md").write_text(header + "\n\n" + table(sections_from(results), markdown=True) + "\n")
    print(f"\nmachine: {info['cpu']}, {info['usable_cpus']} usable CPUs, torch threads {info['torch_threads']}, "
          f"GPU {info['gpu'] or 'none'}; device {args.device}{' (quick run)' if args.quick else ''}")
    print(table(done))
    print(f"\nresults: {args.out}")
    if results["errors"]:
        print("errors: " + "; ".join(f"{k}: {v}" for k, v in results["errors"].items()), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
