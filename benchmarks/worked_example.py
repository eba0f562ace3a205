"""Regenerate the worked example of docs/scoring.md: one FracAtlas radiograph scored end to end.

    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.worked_example --data ../shared/data/fracatlas

Steps, each printed as it runs:

1. ``images/fractured/IMG0000044.jpg`` (FracAtlas, CC BY 4.0) is wrapped as a 12-bit DX For
   Presentation (MONOCHROME2, window 2048/4096, patient ``FracAtlas^IMG0000044`` / ``FRACATLAS-44``,
   sex O; side L and orientation (L, F) read off the image) with UIDs derived from fixed strings
   (``pydicom.uid.generate_uid(entropy_srcs=...)``), so every run scores the same study. FracAtlas
   publishes no pixel spacing: the Imager Pixel Spacing is a nominal value that keeps the object valid.
2. ``monai-fracture score WORK/in --out WORK/out --outputs sr,kos,pr,sc`` runs through the CLI
   with the default (shipped) model (``$MONAI_FRACTURE_MODEL`` is removed from its environment;
   ``--threads`` fixes the thread count, which can move a region's edge by a pixel).
3. The results.csv row is printed; ``dsrdump`` of the SR is written to ``WORK/sr_dsrdump.txt`` and
   printed; ``dciodvfy`` checks the input and every output (when installed).
4. ``dsr2html`` renders the SR and headless Chromium screenshots it (``--window-size=1000,900``)
   into ``--screenshot``; skipped, with a message, when either program is missing.
5. ``--out-figure``: left, the source pixels with the GSPS applied as a viewer would (its modality
   LUT, VOI window and presentation LUT shape) and its graphic objects (polyline, point, text) read
   back from ``PR_*.dcm`` with pydicom, plus the FracAtlas YOLO box of the image (dashed, for
   reference); right, the Secondary Capture's pixels.

Last, every number docs/scoring.md quotes is printed under ``numbers the docs quote``, so a new
model means: rerun, then patch those lines.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

REPO = Path(__file__).resolve().parents[1]
IMAGE = "IMG0000044"
ENTROPY = ("monai-fracture worked example", "FracAtlas", IMAGE)
STUDY_DATE, STUDY_TIME = "20230815", "120000"  # fixed: FracAtlas carries no dates


def example_uid(kind: str) -> str:
    """A UID derived only from the example's name and ``kind`` (study, series, sop)."""
    return generate_uid(entropy_srcs=[*ENTROPY, kind])


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def wrap_as_dx(jpeg: Path, out: Path) -> Dataset:
    """``jpeg`` (8-bit grey) as a 12-bit DX For Presentation file at ``out``; returns the dataset."""
    from PIL import Image

    with Image.open(jpeg) as image:
        grey = np.asarray(image.convert("L"), dtype=np.float64)
    pixels = np.round(grey * 4095.0 / 255.0).astype("<u2")  # 0..255 -> 0..4095, linear
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = example_uid("sop")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = STUDY_DATE
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = STUDY_TIME
    ds.AccessionNumber = "FRACATLAS44"
    ds.Modality = "DX"
    ds.Manufacturer = "FracAtlas (CC BY 4.0), wrapped by monai-fracture"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "FracAtlas IMG0000044"
    ds.SeriesDescription = "FracAtlas images/fractured/IMG0000044.jpg"
    ds.PatientName = f"FracAtlas^{IMAGE}"
    ds.PatientID = "FRACATLAS-44"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.BodyPartExamined = "ARM"
    ds.StudyInstanceUID = example_uid("study")
    ds.SeriesInstanceUID = example_uid("series")
    ds.StudyID = "44"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.BurnedInAnnotation = "NO"
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImagerPixelSpacing = ["0.3", "0.3"]  # nominal: FracAtlas publishes no spacing
    ds.DetectorType = ""
    # FracAtlas records no side or orientation: both read off the image (a frontal view, labels.csv;
    # the lead "L" marker beside the fractured arm on the image's right)
    ds.ImageLaterality = "L"
    ds.PatientOrientation = ["L", "F"]
    ds.AnatomicRegionSequence = Sequence([_code("40983000", "SCT", "Upper arm")])
    ds.AcquisitionContextSequence = Sequence([])
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = -1  # MONOCHROME2: bone (less X-ray) stored high
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.LossyImageCompression = "01"  # the source is a JPEG
    ds.LossyImageCompressionRatio = ["10"]
    ds.LossyImageCompressionMethod = ["ISO_10918_1"]
    ds.PresentationLUTShape = "IDENTITY"
    ds.KVP = ""
    ds.DistanceSourceToDetector = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = "2048", "4096", "LINEAR"
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    out.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return ds


def run_score(monai_fracture: Path, inputs: Path, out: Path, threads: int) -> None:
    """``monai-fracture score`` through the CLI, default model, as docs/scoring.md shows it."""
    env = {k: v for k, v in os.environ.items() if k != "MONAI_FRACTURE_MODEL"}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [str(monai_fracture), "score", str(inputs), "--out", str(out), "--outputs", "sr,kos,pr,sc"]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, cwd=REPO, env=env, check=True)


def dciodvfy_errors(path: Path) -> int | None:
    """Number of ``Error`` lines dciodvfy prints for ``path``; None when dciodvfy is not installed."""
    if shutil.which("dciodvfy") is None:
        return None
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    lines = (done.stdout + done.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    for line in errors:
        print(f"  dciodvfy {path.name}: {line}")
    return len(errors)


def screenshot_sr(sr: Path, html: Path, png: Path) -> bool:
    """``dsr2html`` (default options) and a headless Chromium screenshot; False when a tool is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if shutil.which("dsr2html") is None or chromium is None:
        print("screenshot skipped: needs dsr2html (dcmtk) and chromium")
        return False
    html.write_text(subprocess.run(["dsr2html", str(sr)], capture_output=True, text=True, check=True).stdout)
    png.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1000,900", f"--screenshot={png.resolve()}", html.resolve().as_uri()],
                   check=True, capture_output=True, timeout=180)
    return True


# ---- reading the outputs back ----------------------------------------------------------------------


@dataclass
class Overlay:
    """What the GSPS draws on the source (DICOM pixel coordinates: column, row; first pixel centre (0.5, 0.5))."""

    polylines: list[np.ndarray]
    points: list[np.ndarray]
    texts: list[tuple[str, float, float]]  # text, column, row of its top left
    window: tuple[float, float] | None
    lut_shape: str
    slope: float
    intercept: float


def read_overlay(pr: Dataset) -> Overlay:
    """The graphic objects, window and presentation LUT of a GSPS, with pydicom only."""
    polylines, points, texts = [], [], []
    for annotation in pr.get("GraphicAnnotationSequence", []):
        for graphic in annotation.get("GraphicObjectSequence", []):
            xy = np.asarray(graphic.GraphicData, dtype=float).reshape(-1, 2)
            (points if graphic.GraphicType == "POINT" else polylines).append(xy)
        for text in annotation.get("TextObjectSequence", []):
            corner = text.get("BoundingBoxTopLeftHandCorner") or text.get("AnchorPoint")
            texts.append((str(text.UnformattedTextValue), float(corner[0]), float(corner[1])))
    window = None
    for voi in pr.get("SoftcopyVOILUTSequence", []):
        if "WindowCenter" in voi:
            window = (_first(voi.WindowCenter), _first(voi.WindowWidth))
    slope, intercept = float(pr.get("RescaleSlope", 1) or 1), float(pr.get("RescaleIntercept", 0) or 0)
    return Overlay(polylines, points, texts, window, str(pr.get("PresentationLUTShape", "IDENTITY")), slope, intercept)


def _first(value: object) -> float:
    return float(value[0]) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else float(value)


def presented(stored: np.ndarray, overlay: Overlay) -> np.ndarray:
    """Stored pixels through the GSPS's modality LUT, linear VOI window and presentation LUT, in [0, 1]."""
    values = stored.astype(np.float64) * overlay.slope + overlay.intercept
    if overlay.window is None:
        low, high = np.percentile(values, [1.0, 99.0])
        shown = np.clip((values - low) / max(high - low, 1.0), 0.0, 1.0)
    else:  # PS3.3 C.11.2.1.2.1, LINEAR
        centre, width = overlay.window
        shown = np.clip((values - (centre - 0.5)) / max(width - 1.0, 1.0) + 0.5, 0.0, 1.0)
    return 1.0 - shown if overlay.lut_shape == "INVERSE" else shown


def yolo_boxes(path: Path, rows: int, cols: int) -> list[tuple[float, float, float, float]]:
    """FracAtlas YOLO boxes as (column0, row0, column1, row1) in pixel-edge coordinates (image = [0, cols] x [0, rows])."""
    boxes = []
    for line in path.read_text().split("\n") if path.is_file() else []:
        parts = line.split()
        if len(parts) == 5:
            cx, cy, w, h = (float(v) for v in parts[1:])
            boxes.append(((cx - w / 2) * cols, (cy - h / 2) * rows, (cx + w / 2) * cols, (cy + h / 2) * rows))
    return boxes


def sr_figures(sr: Dataset) -> dict:
    """Probability, threshold, text and Image Region SCOORD of the (first) measurement group of an SR."""
    found: dict = {}

    def walk(items: Sequence) -> None:
        for item in items:
            name = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in item else ""
            if item.ValueType == "NUM" and name in {"Probability", "Threshold Value"}:
                found.setdefault(name, item.MeasuredValueSequence[0].NumericValue)
            elif item.ValueType == "SCOORD" and name == "Image Region":
                found.setdefault("region", np.asarray(item.GraphicData, dtype=float).reshape(-1, 2))
            elif item.ValueType == "TEXT" and name == "Qualitative Evaluations":
                found.setdefault("text", str(item.TextValue))
            walk(item.get("ContentSequence", []))

    walk(sr.get("ContentSequence", []))
    return found


def inside(polygon: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Whether each (column, row) point lies inside the closed polygon."""
    from matplotlib.path import Path as Polygon

    return Polygon(polygon).contains_points(points)


# ---- the figure ------------------------------------------------------------------------------------


def draw_figure(source: Dataset, overlay: Overlay, boxes: list, sc: Dataset, out: Path) -> None:
    """Left: source with the GSPS applied and drawn, FracAtlas box dashed; right: the SC pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rows, cols = int(source.Rows), int(source.Columns)
    extent = (0, cols, rows, 0)  # pixel edges: DICOM GSPS coordinates map directly
    yellow = (1.0, 0.93, 0.1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 6.2), dpi=100)
    left.imshow(presented(source.pixel_array, overlay), cmap="gray", vmin=0, vmax=1, extent=extent,
                interpolation="lanczos")
    for xy in overlay.polylines:
        left.plot(xy[:, 0], xy[:, 1], color=yellow, lw=1.4)
    for xy in overlay.points:
        left.plot(xy[:, 0], xy[:, 1], "+", color=yellow, ms=14, mew=1.4)
    for text, col, row in overlay.texts:
        left.text(col, row, text, color=yellow, fontsize=8, va="top", ha="left")
    for number, (c0, r0, c1, r1) in enumerate(boxes):
        left.add_patch(Rectangle((c0, r0), c1 - c0, r1 - r0, fill=False, ls="--", lw=1.2, color="cyan",
                                 label="FracAtlas box" if number == 0 else None))
    if boxes:
        left.legend(loc="lower left", fontsize=8, framealpha=0.6)
    window = f"window {overlay.window[0]:g}/{overlay.window[1]:g}" if overlay.window else "percentile window"
    left.set_title(f"GSPS drawn on source ({window}, {overlay.lut_shape})", fontsize=10)
    right.imshow(sc.pixel_array, extent=extent, interpolation="lanczos")
    right.set_title("SC (Grad-CAM overlay)", fontsize=10)
    for axis in (left, right):
        axis.set_xlim(0, cols)
        axis.set_ylim(rows, 0)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


# ---- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/fracatlas"), help="FracAtlas folder")
    parser.add_argument("--work", type=Path, help="working folder (its in/ and out/ are replaced); default: a new temp folder")
    parser.add_argument("--out-figure", type=Path, default=Path("docs/scoring/gsps_and_sc.png"),
                        help="GSPS-over-source and SC figure (PNG)")
    parser.add_argument("--screenshot", type=Path, default=Path("docs/scoring/sr_dsr2html.png"),
                        help="dsr2html screenshot of the SR (PNG)")
    parser.add_argument("--threads", type=int, default=1, help="OMP/MKL threads of the scoring run")
    args = parser.parse_args(argv)
    jpeg = args.data / "images" / "fractured" / f"{IMAGE}.jpg"
    if not jpeg.is_file():
        parser.error(f"{jpeg} not found: --data must be the FracAtlas folder")
    monai_fracture = Path(sys.executable).parent / "monai-fracture"
    if not monai_fracture.is_file():
        monai_fracture = Path(shutil.which("monai-fracture") or "monai-fracture")
    tools = {name: shutil.which(name) for name in ("dsrdump", "dsr2html", "dciodvfy", "chromium", "chromium-browser")}
    print("tools:", ", ".join(f"{k} {'yes' if v else 'MISSING'}" for k, v in tools.items()))

    work = args.work or Path(tempfile.mkdtemp(prefix="worked-example-"))
    inputs, out = work / "in", work / "out"
    for folder in (inputs, out):
        if folder.exists():
            shutil.rmtree(folder)
    source_path = inputs / f"{IMAGE}.dcm"
    source = wrap_as_dx(jpeg, source_path)
    print(f"(a) {source_path}: {source.Columns} x {source.Rows} DX, 12 bits, study {source.StudyInstanceUID}")
    dciodvfy = {source_path.name: dciodvfy_errors(source_path)}

    print("(b) scoring")
    run_score(monai_fracture, inputs, out, args.threads)
    with open(out / "results.csv", newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if r["status"] == "scored")
    print("(c) results.csv:", ",".join(row.values()))
    manifest = json.loads((out / "manifest.json").read_text())
    files = sorted((out / "dicom").glob("study-*/*.dcm"))
    kinds = {path.name.split("_")[0]: path for path in files}
    for path in files:
        dciodvfy[path.name.split("_")[0]] = dciodvfy_errors(path)
    sr_path, pr_path, sc_path = kinds["SR"], kinds["PR"], kinds["SC"]
    dump = None
    if tools["dsrdump"]:
        dump = subprocess.run(["dsrdump", str(sr_path)], capture_output=True, text=True, check=True).stdout
        (work / "sr_dsrdump.txt").write_text(dump)
        print(f"    dsrdump -> {work / 'sr_dsrdump.txt'}\n{dump}")
    else:
        print("    dsrdump skipped: dcmtk not installed")

    print("(d) dsr2html screenshot")
    if screenshot_sr(sr_path, work / "sr.html", args.screenshot):
        print(f"    {args.screenshot}")

    print("(e) figure")
    sr, pr, sc = (pydicom.dcmread(p) for p in (sr_path, pr_path, sc_path))
    overlay = read_overlay(pr)
    rows, cols = int(source.Rows), int(source.Columns)
    boxes = yolo_boxes(args.data / "annotations" / "yolo" / f"{IMAGE}.txt", rows, cols)
    draw_figure(source, overlay, boxes, sc, args.out_figure)
    print(f"    {args.out_figure}")

    figures = sr_figures(sr)
    region = figures["region"]
    peak = overlay.points[0][0] if overlay.points else None
    model = manifest["model"]
    print("\nnumbers the docs quote")
    print(f"  model: {model.get('name')} {model.get('version')} ({model.get('path')}), results.csv model {row['model']}")
    print(f"  results.csv: probability {row['probability']}, prediction {row['prediction']}, threshold {row['threshold']}")
    print(f"  output folder: {sr_path.parent.name}/{{{','.join(sorted(kinds))}}}_2.25....dcm")
    print("  dciodvfy errors:", ", ".join(f"{k} {v}" for k, v in dciodvfy.items()) if tools["dciodvfy"] else "not run")
    print(f"  SR series: {sr.SeriesDescription} (#{sr.SeriesNumber}), probability {figures.get('Probability')}, "
          f"threshold value {figures.get('Threshold Value')}")
    print(f"  SR text: {figures.get('text')}")
    print(f"  SR Image Region: POLYLINE, {len(region)} points, first {region[0][0]:g}/{region[0][1]:g}, "
          f"columns {region[:, 0].min():.0f}-{region[:, 0].max():.0f}, rows {region[:, 1].min():.0f}-{region[:, 1].max():.0f}")
    print(f"  GSPS: text {overlay.texts[0][0] if overlay.texts else None!r}, window {overlay.window}, {overlay.lut_shape}, "
          f"peak (column, row) {None if peak is None else f'{peak[0]:g}, {peak[1]:g}'}")
    long_side = max(rows, cols)
    for c0, r0, c1, r1 in boxes:
        corners = np.array([[c0, r0], [c1, r0], [c1, r1], [c0, r1]])
        inside_n = int(inside(region, corners).sum())
        centre = ((c0 + c1) / 2, (r0 + r1) / 2)
        print(f"  FracAtlas box: columns {c0:.0f}-{c1:.0f}, rows {r0:.0f}-{r1:.0f}, centre {centre[0]:.0f}, {centre[1]:.0f}; "
              f"{inside_n}/4 corners inside the region")
        if peak is not None:
            dc, dr = centre[0] - peak[0], centre[1] - peak[1]
            grow = max(c0 - peak[0], peak[0] - c1, r0 - peak[1], peak[1] - r1, 0.0)
            where = ("above" if dr < 0 else "below") + " and " + ("left of" if dc < 0 else "right of")
            print(f"    box centre - peak: {dc:+.0f} columns, {dr:+.0f} rows ({where} the peak; "
                  f"{float(np.hypot(dc, dr)):.0f} px apart); peak outside the box by {grow:.0f} px "
                  f"= {grow / long_side:.3f} of the long side {long_side}")
    print(f"work folder: {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
