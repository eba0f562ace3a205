"""``score ... --report``: the HTML summary of a finished run (``DIR/report.html``).

Built from the run's own outputs (``results.csv`` and the model named in ``manifest.json``),
so it also works on a folder scored earlier. Thumbnails are the Grad-CAM overlays of the
highest-scoring radiographs, made with the classifier's own ``heatmap`` (the one the DICOM
secondary captures use), so the picture in the page is the one a PACS would show.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai_fracture.reports.html import ReportContent, Thumbnail, write_html_report
from monai_fracture.reports.keyimage import overlay_rgb

logger = logging.getLogger(__name__)

REPORT_NAME = "report.html"
LABEL_TRUE = {"1", "true", "yes", "fracture", "fractured", "positive"}
LABEL_FALSE = {"0", "false", "no", "no_fracture", "not_fractured", "negative"}


class LabelsError(ValueError):
    """A labels CSV that cannot be used; the message names the file and the reason."""


def load_label_table(csv_path: str | os.PathLike) -> tuple[str, dict[str, int]]:
    """Read a labels CSV: ``(key, {key value: 0/1})`` with key ``path`` (made absolute) or ``sop_uid``.

    Relative paths are taken relative to the CSV's folder (as ``demo-data`` writes labels.csv).
    Labels are 0/1 or words such as ``fractured`` / ``not_fractured``.
    """
    csv_path = Path(csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            table = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise LabelsError(f"{csv_path}: cannot read labels: {err}") from err
    columns = set(table[0]) if table else set()
    if "label" not in columns or not columns & {"path", "sop_uid"}:
        raise LabelsError(f"{csv_path}: labels need a 'label' column and a 'path' or 'sop_uid' column, "
                          f"found {sorted(columns) or 'no rows'}")
    key = "path" if "path" in columns else "sop_uid"
    by_key: dict[str, int] = {}
    for number, entry in enumerate(table, start=2):
        text = (entry.get("label") or "").strip().lower()
        if text not in LABEL_TRUE | LABEL_FALSE:
            raise LabelsError(f"{csv_path}: line {number}: label {entry.get('label')!r} is not 0/1")
        value = entry.get(key) or ""
        if key == "path":
            value = os.path.realpath(csv_path.parent / value)
        by_key[value] = int(text in LABEL_TRUE)
    return key, by_key


def read_labels(csv_path: str | os.PathLike, rows: list[Mapping[str, str]]) -> dict[str, int]:
    """Map results.csv paths to 0/1 from a labels CSV (see ``load_label_table``); none matching is an error."""
    key, by_key = load_label_table(csv_path)
    labels: dict[str, int] = {}
    for row in rows:
        lookup = os.path.realpath(row["path"]) if key == "path" else row.get("sop_uid", "")
        if lookup in by_key:
            labels[row["path"]] = by_key[lookup]
    if not labels:
        raise LabelsError(f"{csv_path}: none of its {len(by_key)} entries matches an input of this run "
                          f"(matched on {key})")
    logger.info("labels for %d of %d inputs from %s", len(labels), len(rows), csv_path)
    return labels


def _thumbnail(classifier: Any, path: str, probability: float, label: int | None) -> Thumbnail | None:
    from monai_fracture.io import read_image
    from monai_fracture.scoring.localise import display_image  # the same view the DICOM heatmap SC shows

    array, meta = read_image(path)
    if array.ndim != 2:
        return None  # volumes: no 2D heatmap
    cam = classifier.heatmap(array, meta)
    return Thumbnail(path, overlay_rgb(display_image(array, meta), cam), probability, label)


def write_run_report(
    out_dir: str | os.PathLike,
    *,
    labels_csv: str | os.PathLike | None = None,
    model: Any = None,
    device: str = "cpu",
    thumbnails: int = 24,
) -> Path:
    """Write ``out_dir/report.html`` for a finished run; ``model`` defaults to the one in manifest.json."""
    from monai_fracture.model.classifier import Classifier
    from monai_fracture.scoring.table import read_results_csv

    out_dir = Path(out_dir)
    results = out_dir / "results.csv"
    if not results.is_file():
        raise FileNotFoundError(f"{results}: no results.csv (score the folder first)")
    rows = [row.to_dict() for row in read_results_csv(results)]
    manifest_path = out_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    entry = manifest.get("model") or {}
    labels = read_labels(labels_csv, rows) if labels_csv is not None else None
    threshold = float(rows[0]["threshold"]) if rows and rows[0].get("threshold") else entry.get("threshold")
    notes: list[str] = []
    content = ReportContent(rows=rows, model=entry.get("id", ""), threshold=threshold, labels=labels, notes=notes)
    scored = sorted((r for r in rows if r["status"] == "scored" and r["probability"]),
                    key=lambda r: float(r["probability"]), reverse=True)
    source = model if model is not None else entry.get("path")
    if scored and thumbnails > 0 and source:
        classifier = model if isinstance(model, Classifier) else Classifier(source, device=device)
        if not classifier.supports_heatmaps:
            notes.append(f"No heatmaps: Grad-CAM needs the PyTorch model, not {classifier.model.format}.")
        else:
            made: list[Thumbnail] = []
            for row in scored:
                if len(made) >= thumbnails:
                    break
                try:
                    thumb = _thumbnail(classifier, row["path"], float(row["probability"]),
                                       labels.get(row["path"]) if labels else None)
                except Exception as err:  # a thumbnail is a nicety: log it, keep the report
                    logger.warning("no thumbnail for %s: %s", row["path"], err)
                    continue
                if thumb is not None:
                    made.append(thumb)
            content.thumbnails = made
    path = write_html_report(out_dir / REPORT_NAME, content)
    logger.info("wrote %s", path)
    return path
