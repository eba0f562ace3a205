"""`make mutate`: mutation testing of the code whose mistakes hurt most, scored per module.

mutmut (``[tool.mutmut]`` in pyproject.toml) copies the package to ``mutants/`` and runs, for each
mutant, only the selected tests that reach the mutated function. This script names the functions
(a whole module where all of it matters, the LUT chain only in ``io/dicom_pixels.py``), runs them,
and prints the score per module with the surviving mutants, so a sitting on 2 cores is enough.
Verdicts are kept in ``mutants/``: after adding tests, ``--survivors`` re-checks only the mutants
not yet killed (killed ones stay killed when tests are only added).
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _functions(module: str, names: tuple[str, ...]) -> list[str]:
    return [f"{module}.x_{name}__mutmut_*" for name in names]


#: module label -> mutmut name patterns (module-level functions are ``x_<name>``, methods ``xǁClassǁ<name>``).
MODULES: dict[str, list[str]] = {
    "io LUT chain (io/dicom_pixels.py)": _functions("monai_fracture.io.dicom_pixels", (
        "_rescale", "_window", "window_to_unit", "_stored_range", "_usable_lut", "_voi_lut_depth", "grey_intensity",
        "_table_worthwhile", "_grey_through_table", "_grey_mono", "_float32", "_float32_range", "_luma",
    )),
    "leakage (data/leakage.py)": ["monai_fracture.data.leakage.*"],
    "journal/resume (scoring/journal.py)": ["monai_fracture.scoring.journal.*"],
    "decision threshold (training/metrics.py)": _functions("monai_fracture.training.metrics", (
        "_has_both_classes", "choose_threshold", "_between_scores", "_safe_div", "binary_scores", "threshold_metrics",
    )),
    "UID derivation (reports/files.py, evidence.py)": _functions("monai_fracture.reports.files", (
        "stable_hash", "derived_uid", "study_folder", "object_file_name",
    )) + _functions("monai_fracture.reports.evidence", ("is_valid_uid",)),
}
DETECTED = ("killed", "timeout", "caught by type check", "segfault")


def run_mutmut(patterns: list[str], max_children: int) -> int:
    env = dict(os.environ)
    env.setdefault("MONAI_FRACTURE_SHARED_DATA", str(REPO.parent / "shared" / "data"))  # tests run in mutants/
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *patterns]
    return subprocess.run(command, cwd=REPO, env=env, check=False).returncode


def results() -> dict[str, str]:
    """mutant name -> status, from mutmut's own record."""
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    statuses = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep:
            statuses[name] = status
    return statuses


def report(selected: dict[str, list[str]], statuses: dict[str, str], min_score: float) -> bool:
    """Print the per-module table (Markdown, for docs/testing.md) and the survivors; True when all pass."""
    print("| module | mutants | killed | timeout | survived | no tests | score |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    survivors: dict[str, list[str]] = {}
    passed = True
    for label, patterns in selected.items():
        mine = {n: s for n, s in statuses.items() if any(fnmatch.fnmatchcase(n, p) for p in patterns)}
        counts = Counter(mine.values())
        detected = sum(counts[s] for s in DETECTED)
        score = 100.0 * detected / len(mine) if mine else float("nan")
        passed &= score >= min_score
        print(f"| {label} | {len(mine)} | {counts['killed']} | {counts['timeout']} | {counts['survived']} "
              f"| {counts['no tests']} | {score:.1f}% |")
        survivors[label] = sorted(n for n, s in mine.items() if s not in DETECTED)
    for label, names in survivors.items():
        if names:
            print(f"\n{label}: not killed ({len(names)}); see `mutmut show NAME`")
            for name in names:
                print(f"  {name}: {statuses[name]}")
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", action="append", choices=list(MODULES), help="only this module (repeatable)")
    parser.add_argument("--max-children", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    parser.add_argument("--report-only", action="store_true", help="print the scores of the last run")
    parser.add_argument("--survivors", action="store_true", help="re-run only the mutants the last run did not kill")
    parser.add_argument("--min-score", type=float, default=85.0, help="exit 1 when a module scores below (percent)")
    args = parser.parse_args(argv)
    selected = {k: v for k, v in MODULES.items() if not args.module or k in args.module}
    patterns = [p for module_patterns in selected.values() for p in module_patterns]
    if args.survivors:
        patterns = sorted(n for n, s in results().items()
                          if s not in DETECTED and any(fnmatch.fnmatchcase(n, p) for p in patterns))
    if not args.report_only and patterns:
        run_mutmut(patterns, args.max_children)
    return 0 if report(selected, results(), args.min_score) else 1


if __name__ == "__main__":
    sys.exit(main())
