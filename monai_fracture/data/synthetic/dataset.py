"""The embedded demo dataset: synthetic DX/CR radiographs or CT series written as real DICOM.

Lets a new user run the whole pipeline on a machine with no dataset. Archive-like variety
(MONOCHROME1/2, 10-16 bits stored, windows or VOI LUTs or nothing, several pixel spacings,
RLE / JPEG-LS / JPEG 2000 lossless, extensionless files, patients with several studies of
several views) is drawn independently of the label, so only the bone tells the classes apart.

Deterministic per seed: every random draw comes from ``numpy.random.default_rng([seed, ...])``
and every UID from ``pydicom.uid.generate_uid(entropy_srcs=[...])``; no clock is read.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from pydicom.uid import generate_uid

from monai_fracture.data.datalist import items_from_table, write_datalist
from monai_fracture.data.split import split_items
from monai_fracture.data.synthetic.ct_phantom import CT_ANATOMIES, simulate_ct
from monai_fracture.data.synthetic.dicom_writer import (
    TRANSFER_SYNTAXES,
    Hierarchy,
    available_transfer_syntaxes,
    ct_slice_dataset,
    radiograph_dataset,
    save_dataset,
)
from monai_fracture.data.synthetic.phantom import ANATOMIES, ANATOMY_WEIGHTS, FRACTURE_TYPES, FRACTURE_WEIGHTS, simulate_radiograph

logger = logging.getLogger(__name__)

LABEL_COLUMNS = [
    "path", "label", "fracture_type", "bone", "fracture_position", "fracture_row", "fracture_col", "fracture_slice",
    "anatomy", "view", "patient_id", "study_uid", "series_uid", "sop_uid", "accession_number", "modality",
    "photometric", "bits_stored", "transfer_syntax", "window", "rows", "cols", "slices", "pixel_spacing",
    "marker", "group",
]
DEFAULT_N = {"xr": 300, "ct": 40}
DEFAULT_SIZE = {"xr": 512, "ct": 64}
MANIFEST = "demo_manifest.json"
_VIEWS = ("AP", "LAT", "OBL")


def _uid(seed: int, *parts) -> str:
    return generate_uid(entropy_srcs=["monai-fracture-demo", str(seed), *map(str, parts)])


def parse_size(size: int | str | None, modality: str) -> tuple[int, int] | int:
    """``512`` -> long side 512 with aspect variety; ``"2048x2048"`` -> exactly rows x cols."""
    if size is None:
        return DEFAULT_SIZE[modality]
    if isinstance(size, str) and "x" in size.lower():
        rows, cols = (int(v) for v in size.lower().split("x"))
        return rows, cols
    return int(size)


@dataclass
class _Job:
    """One image (XR) or series (CT) to render; picklable for worker processes."""

    seed: int
    patient: int
    study: int
    series: int
    view: str
    label: int
    fracture_type: str
    study_style: dict
    out_dir: str
    modality: str
    size: object
    compress: bool
    transfer_syntaxes: tuple[str, ...]


def _hierarchy(job: _Job, instance: int = 1) -> Hierarchy:
    s = job.seed
    birth = date(1940, 1, 1) + timedelta(days=int(np.random.default_rng([s, job.patient, 7]).integers(0, 25000)))
    study_day = date(2020, 1, 1) + timedelta(days=int(np.random.default_rng([s, job.patient, job.study, 8]).integers(0, 1800)))
    return Hierarchy(
        patient_id=f"DEMO-{s}-P{job.patient:04d}",
        patient_name=f"Phantom^P{job.patient:04d}",
        patient_sex="MF"[job.patient % 2],
        patient_birth_date=birth.strftime("%Y%m%d"),
        study_uid=_uid(s, job.modality, "study", job.patient, job.study),
        study_id=str(job.study),
        accession_number=f"ACC{s % 1000:03d}{job.patient:04d}{job.study:02d}",
        study_date=study_day.strftime("%Y%m%d"),
        study_time=f"{8 + (job.patient + job.study) % 10:02d}{(job.patient * 7) % 60:02d}00",
        series_uid=_uid(s, job.modality, "series", job.patient, job.study, job.series),
        series_number=job.series,
        sop_uid=_uid(s, job.modality, "sop", job.patient, job.study, job.series, instance),
        instance_number=instance,
        frame_of_reference_uid=_uid(s, job.modality, "for", job.patient, job.study),
    )


def _relative_dir(job: _Job) -> Path:
    return Path(f"patient_{job.patient:04d}") / f"study_{job.study:02d}" / f"series_{job.series:02d}_{job.view}"


def _pick_syntax(rng: np.random.Generator, job: _Job, smallest_side: int) -> str:
    if not job.compress:
        return str(rng.choice(["explicit", "implicit"], p=[0.8, 0.2]))
    # OpenJPEG's encoder uses 6 wavelet levels: it fails on images under 64 px
    options = [t for t in job.transfer_syntaxes if t != "jpeg2000" or smallest_side >= 64]
    weights = {"explicit": 0.35, "implicit": 0.1, "rle": 0.25, "jpegls": 0.15, "jpeg2000": 0.15}
    p = np.array([weights[t] for t in options])
    return str(rng.choice(options, p=p / p.sum()))


def _image_shape(size, rng: np.random.Generator) -> tuple[int, int]:
    if isinstance(size, tuple):
        return size
    long_side = int(size)
    aspect = float(rng.choice([1.0, 0.82, 0.8, 0.75]))
    short = int(round(long_side * aspect / 2) * 2)
    return (long_side, short) if rng.random() < 0.75 else (short, long_side)


def _stored_pixels(signal: np.ndarray, rng: np.random.Generator, style: dict) -> tuple[np.ndarray, tuple | None, tuple | None]:
    """Quantise the [0, 1] signal into stored values; decide window / VOI LUT."""
    bits = style["bits_stored"]
    top = 2**bits - 1
    gain = rng.uniform(0.75, 0.98) * top
    offset = rng.uniform(0.0, 0.02) * top
    stored = np.clip(np.rint(signal * gain + offset), 0, top).astype(np.uint16)
    if style["photometric"] == "MONOCHROME1":
        stored = (top - stored).astype(np.uint16)
    lo, hi = np.percentile(stored[::4, ::4], [1.0, 99.5])
    window = ((lo + hi) / 2.0, max(hi - lo, 2.0)) if style["window"] == "window" else None
    voi = None
    if style["window"] == "voi_lut":
        x = np.arange(top + 1, dtype=np.float64)
        table = 4095.0 / (1.0 + np.exp(-(x - (lo + hi) / 2.0) / max((hi - lo) / 6.0, 1.0)))
        voi = (0, np.rint(table).astype(np.uint16))
    return stored, window, voi


def _render_xr(job: _Job) -> list[dict]:
    rng = np.random.default_rng([job.seed, job.patient, job.study, job.series, 1])
    style = job.study_style
    shape = _image_shape(job.size, np.random.default_rng([job.seed, job.patient, job.study, 2]))
    kind = None if job.label == 0 else job.fracture_type
    fracture_rng = np.random.default_rng([job.seed, job.patient, job.study, job.series, 5])
    phantom = simulate_radiograph(shape, rng, style["anatomy"], kind, fracture_rng)
    stored, window, voi = _stored_pixels(phantom.signal, rng, style)
    ids = _hierarchy(job)
    ds = radiograph_dataset(
        stored, ids=ids, modality=style["modality"], photometric=style["photometric"], bits_stored=style["bits_stored"],
        spacing_mm=style["spacing"], body_part=style["anatomy"], view=job.view, laterality=style["laterality"],
        window=window, voi_lut=voi,
    )
    syntax = _pick_syntax(rng, job, min(shape))
    name = f"image_{job.series:02d}" + ("" if rng.random() < 0.25 else ".dcm")
    rel = _relative_dir(job) / name
    save_dataset(ds, Path(job.out_dir) / rel, syntax)
    f = phantom.fracture
    return [
        {
            "path": rel.as_posix(), "label": job.label, "fracture_type": f.kind if f else "none",
            "bone": f.bone if f else "", "fracture_position": round(f.position, 4) if f else None,
            "fracture_row": round(f.row, 1) if f else None, "fracture_col": round(f.col, 1) if f else None,
            "fracture_slice": None, "anatomy": style["anatomy"], "view": job.view, "patient_id": ids.patient_id,
            "study_uid": ids.study_uid, "series_uid": ids.series_uid, "sop_uid": ids.sop_uid,
            "accession_number": ids.accession_number, "modality": style["modality"],
            "photometric": style["photometric"], "bits_stored": style["bits_stored"],
            "transfer_syntax": str(TRANSFER_SYNTAXES[syntax]), "window": style["window"],
            "rows": shape[0], "cols": shape[1], "slices": 1, "pixel_spacing": style["spacing"],
            "marker": phantom.marker, "group": ids.patient_id,
        }
    ]


def _render_ct(job: _Job) -> list[dict]:
    rng = np.random.default_rng([job.seed, job.patient, job.study, job.series, 1])
    style = job.study_style
    side = job.size if isinstance(job.size, int) else job.size[0]
    shape = (side, side, side) if isinstance(job.size, int) else (job.size[0], job.size[0], job.size[1])
    spacing = (style["slice_thickness"], style["spacing"], style["spacing"])
    phantom = simulate_ct(shape, spacing, rng, style["anatomy"], bool(job.label))
    signed = style["signed"]
    intercept = 0.0 if signed else -1024.0
    stored = np.rint(phantom.volume - intercept)
    stored = stored.astype(np.int16) if signed else np.clip(stored, 0, 4095).astype(np.uint16)
    syntax = _pick_syntax(rng, job, min(shape[1:]))
    folder = _relative_dir(job)
    origin = (-shape[2] * spacing[2] / 2, -shape[1] * spacing[1] / 2, style["table_z"])
    f = phantom.fracture
    first = None
    for k in range(shape[0]):
        ids = _hierarchy(job, instance=k + 1)
        first = first or ids
        position = (origin[0], origin[1], origin[2] + k * spacing[0])
        ds = ct_slice_dataset(
            stored[k], ids=ids, body_part=style["anatomy"], position=position, spacing=spacing, intercept=intercept,
            bits_stored=16 if signed else 12, signed=signed, laterality=style["laterality"],
        )
        save_dataset(ds, Path(job.out_dir) / folder / f"slice_{k + 1:03d}.dcm", syntax)
    return [
        {
            "path": folder.as_posix(), "label": job.label, "fracture_type": f.kind if f else "none",
            "bone": f.bone if f else "", "fracture_position": round(f.position, 4) if f else None,
            "fracture_row": f.row if f else None, "fracture_col": f.col if f else None,
            "fracture_slice": f.slice if f else None, "anatomy": style["anatomy"], "view": "AXIAL",
            "patient_id": first.patient_id, "study_uid": first.study_uid, "series_uid": first.series_uid,
            "sop_uid": "", "accession_number": first.accession_number, "modality": "CT", "photometric": "MONOCHROME2",
            "bits_stored": 16 if signed else 12, "transfer_syntax": str(TRANSFER_SYNTAXES[syntax]), "window": "window",
            "rows": shape[1], "cols": shape[2], "slices": shape[0], "pixel_spacing": style["spacing"],
            "marker": False, "group": first.patient_id,
        }
    ]


def _render(job: _Job) -> list[dict]:
    return _render_xr(job) if job.modality == "xr" else _render_ct(job)


def _study_style(seed: int, patient: int, study: int, modality: str) -> dict:
    """Acquisition choices of one study; drawn without looking at the label."""
    rng = np.random.default_rng([seed, patient, study, 3])
    if modality == "ct":
        return {
            "anatomy": str(rng.choice(CT_ANATOMIES)),
            "spacing": float(rng.choice([0.6, 0.7, 0.8, 0.9])),
            "slice_thickness": float(rng.choice([1.0, 1.25, 1.5])),
            "signed": bool(rng.random() < 0.5),
            "table_z": float(rng.uniform(-400, -100)),
            "laterality": str(rng.choice(["L", "R"])),
        }
    mod = str(rng.choice(["DX", "CR"], p=[0.6, 0.4]))
    bits = int(rng.choice([10, 12, 12, 14, 15, 16]))
    window_choices = ["window", "voi_lut"] if mod == "DX" else ["window", "none"]
    window = str(rng.choice(window_choices, p=[0.7, 0.3] if mod == "DX" else [0.5, 0.5]))
    if window == "voi_lut" and bits > 12:
        window = "window"  # a LUT needs one entry per stored value; keep files small
    return {
        "anatomy": str(rng.choice(ANATOMIES, p=ANATOMY_WEIGHTS)),
        "modality": mod,
        "photometric": str(rng.choice(["MONOCHROME1", "MONOCHROME2"], p=[0.35, 0.65])),
        "bits_stored": bits,
        "window": window,
        "spacing": float(rng.choice([0.1, 0.125, 0.139, 0.143, 0.15, 0.16, 0.175, 0.2])),
        "laterality": str(rng.choice(["L", "R"])),
    }


def plan_jobs(
    n: int, seed: int, modality: str, out_dir: Path, size, compress: bool, fracture_fraction: float
) -> list[_Job]:
    """Patients with 1-2 studies, each XR study with 1-3 views, until ``n`` images/series exist."""
    syntaxes = tuple(available_transfer_syntaxes())
    jobs: list[_Job] = []
    patient = 0
    while len(jobs) < n:
        patient += 1
        prng = np.random.default_rng([seed, patient, 0])
        n_studies = 1 if prng.random() < 0.7 else 2
        for study in range(1, n_studies + 1):
            srng = np.random.default_rng([seed, patient, study, 4])
            label = int(srng.random() < fracture_fraction)
            kind = str(srng.choice(FRACTURE_TYPES, p=FRACTURE_WEIGHTS)) if label else "none"
            style = _study_style(seed, patient, study, modality)
            n_views = 1 if modality == "ct" else int(srng.choice([1, 2, 3], p=[0.3, 0.55, 0.15]))
            for series in range(1, n_views + 1):
                view = "AXIAL" if modality == "ct" else _VIEWS[series - 1]
                jobs.append(
                    _Job(seed, patient, study, series, view, label, kind, style, str(out_dir), modality, size, compress, syntaxes)
                )
    return jobs[:n]


def generate_demo_dataset(
    out_dir: str | os.PathLike,
    n: int | None = None,
    modality: str = "xr",
    seed: int = 0,
    size: int | str | None = None,
    compress: bool = True,
    fracture_fraction: float = 0.5,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    workers: int | None = None,
) -> pd.DataFrame:
    """Write a synthetic study set as DICOM under ``out_dir``, plus ``labels.csv`` and ``datalist.json``.

    ``n`` counts images (XR) or series (CT). ``size`` is the long side in pixels (XR; aspect
    varies) or the cube side (CT); ``"ROWSxCOLS"`` fixes the shape. Returns the labels table.
    """
    if modality not in DEFAULT_N:
        raise ValueError(f"modality must be 'xr' or 'ct', got {modality!r}")
    n = DEFAULT_N[modality] if n is None else int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(n, seed, modality, out, parse_size(size, modality), compress, fracture_fraction)
    start = time.perf_counter()
    workers = workers if workers is not None else 1
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            rows = [r for chunk in pool.map(_render, jobs, chunksize=4) for r in chunk]
    else:
        from monai_fracture.progress import progress

        bar = progress(len(jobs), "demo-data", None, unit="images" if modality == "xr" else "series")
        rows = []
        for job in jobs:
            rows.extend(_render(job))
            bar.update(1)
        bar.close()
    table = pd.DataFrame(rows, columns=LABEL_COLUMNS)
    table.to_csv(out / "labels.csv", index=False)
    items = items_from_table(table, out)
    datalist = split_items(items, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    write_datalist(datalist, out / "datalist.json", check_pixels=False, description=f"monai-fracture demo ({modality}, seed {seed})")
    (out / MANIFEST).write_text(
        json.dumps(
            {"modality": modality, "n": n, "seed": seed, "size": size, "compress": compress,
             "fracture_fraction": fracture_fraction, "items": len(table)},
            indent=1,
        )
    )
    logger.info(
        "wrote %d %s items (%d fractured) to %s in %.1f s",
        len(table), modality, int(table["label"].sum()), out, time.perf_counter() - start,
    )
    return table
