"""Are two scoring runs the same? results.csv row by row, and every DICOM output element by element.

For refactors that must not change behaviour: score the same inputs with the old and the new tree
into two folders, then

    python -m benchmarks.compare_outputs OLD_OUT NEW_OUT

Creation and contribution dates and times are ignored (they are meant to differ); everything else,
file meta included, must be equal. Exit code 0 when the runs are the same, 1 otherwise.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

IGNORED = frozenset({
    "InstanceCreationDate", "InstanceCreationTime", "SeriesDate", "SeriesTime", "ContentDate", "ContentTime",
    "PresentationCreationDate", "PresentationCreationTime", "ContributionDateTime", "TimeOfSecondaryCapture",
})


def flatten(dataset: Dataset, prefix: str = "") -> dict[str, Any]:
    """Every element as ``path -> value`` (sequences unrolled, pixel data hashed), times left out."""
    out: dict[str, Any] = {}
    for element in dataset:
        key = element.keyword or str(element.tag)
        if key in IGNORED:
            continue
        if element.VR == "SQ":
            for index, item in enumerate(element.value):
                out.update(flatten(item, f"{prefix}{key}[{index}]."))
        else:
            out[prefix + key] = hash(bytes(element.value)) if key == "PixelData" else element.value
    return out


def compare(old: Path, new: Path) -> list[str]:
    """What differs between the two output folders (empty: the same)."""
    differences = []
    rows_old = list(csv.DictReader((old / "results.csv").open()))
    rows_new = list(csv.DictReader((new / "results.csv").open()))
    if rows_old != rows_new:
        differences.append(f"results.csv differs ({len(rows_old)} vs {len(rows_new)} rows)")
    files_old = {p.relative_to(old) for p in (old / "dicom").rglob("*.dcm")}
    files_new = {p.relative_to(new) for p in (new / "dicom").rglob("*.dcm")}
    differences += [f"only in {old}: {p}" for p in sorted(files_old - files_new)]
    differences += [f"only in {new}: {p}" for p in sorted(files_new - files_old)]
    for relative in sorted(files_old & files_new):
        a, b = pydicom.dcmread(old / relative), pydicom.dcmread(new / relative)
        flat_a, flat_b = flatten(a) | flatten(a.file_meta, "meta."), flatten(b) | flatten(b.file_meta, "meta.")
        keys = sorted(k for k in flat_a.keys() | flat_b.keys() if flat_a.get(k) != flat_b.get(k))
        if keys:
            differences.append(f"{relative}: {', '.join(keys[:8])}")
    print(f"results.csv rows {len(rows_old)} / {len(rows_new)}; DICOM files {len(files_old)} / {len(files_new)}; "
          f"{len(differences)} difference(s)")
    return differences


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args(argv)
    differences = compare(args.old, args.new)
    for line in differences:
        print(line)
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
