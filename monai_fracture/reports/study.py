"""All DICOM outputs of one study, chosen by name: SR, KOS of positives, GSPS per region, SC per heatmap."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from monai_fracture.reports import series
from monai_fracture.reports.evidence import clean_study_headers
from monai_fracture.reports.files import atomic_write_dataset, derived_uid, object_file_name, study_folder
from monai_fracture.reports.ko import build_key_object_selection
from monai_fracture.reports.pr import build_fracture_gsps, has_display_window, presentation_header, window_from_pixels
from monai_fracture.reports.results import Heatmap, ImageResult, ModelIdentity
from monai_fracture.reports.sc import build_heatmap_sc
from monai_fracture.reports.sr import build_fracture_sr

logger = logging.getLogger(__name__)

#: Every object family a run can write, and what it writes without ``--outputs``.
OUTPUTS = ("sr", "kos", "pr", "sc")
DEFAULT_OUTPUTS = ("sr", "kos", "pr")
_ALIASES = {"ko": "kos", "gsps": "pr", "heatmap": "sc", "heatmaps": "sc"}


def parse_outputs(value: str | Iterable[str] | None, heatmaps: bool = False) -> tuple[str, ...]:
    """``"sr,kos,pr,sc"`` (or a list) -> the families in canonical order; ``None`` -> the defaults.

    ``heatmaps`` (the ``--heatmaps`` flag) adds ``sc``. Unknown names raise ``ValueError`` naming them.
    """
    if value is None:
        chosen = set(DEFAULT_OUTPUTS)
    else:
        parts = value.split(",") if isinstance(value, str) else list(value)
        names = [_ALIASES.get(p.strip().lower(), p.strip().lower()) for p in parts if p.strip()]
        unknown = sorted(set(names) - set(OUTPUTS))
        if unknown:
            raise ValueError(f"unknown output(s) {', '.join(unknown)}; choose from {', '.join(OUTPUTS)}")
        chosen = set(names)
    if heatmaps:
        chosen.add("sc")
    return tuple(name for name in OUTPUTS if name in chosen)


def write_study_outputs(
    study_sources: Sequence[Dataset],
    results: Sequence[ImageResult],
    model_info: ModelIdentity,
    out_dir: str | os.PathLike,
    heatmaps: Mapping[str, Heatmap] | Sequence[Heatmap] | None = None,
    outputs: Iterable[str] | None = None,
) -> list[Path]:
    """Write the chosen objects for one study: SR, KOS (when some result is positive), one GSPS per
    positive result with a region, one SC per heatmap.

    ``study_sources`` are headers (pixel data not needed) of the instances the ``results`` refer
    to, all of one study; files go to ``out_dir/study-<hash>/`` and are named by their SOP
    Instance UIDs, which follow the content (``reports.series``): the same result again replaces
    the files, a different one adds new instances. ``outputs`` defaults to ``DEFAULT_OUTPUTS``
    (plus ``sc`` when ``heatmaps`` are given). Returns the written paths.
    """
    if not results:
        raise ValueError("no results to report")
    chosen = parse_outputs(outputs, heatmaps=bool(heatmaps) and outputs is None)
    sources = list(study_sources)
    headers = clean_study_headers(sources)
    by_uid = {str(h.SOPInstanceUID): h for h in headers}
    missing = [uid for r in results for uid in r.sop_uids if uid not in by_uid]
    if missing:
        raise ValueError(f"results refer to {len(missing)} instance(s) not among the study sources: {missing[:3]}")
    study_uid = str(headers[0].StudyInstanceUID)
    model_key = series.model_key(model_info)
    folder = study_folder(out_dir, study_uid)
    device_uid = derived_uid("device", *model_key)
    stamp = series.Stamp.now()
    ordered = sorted(results, key=lambda r: r.sop_uids)
    content = [r.content_key() for r in ordered]
    written: list[Path] = []

    if "sr" in chosen:
        sr = build_fracture_sr(
            headers,
            results,
            model_info,
            series_uid=series.series_uid("sr", study_uid, model_info),
            sop_uid=series.instance_uid("sr", study_uid, model_info, content),
            device_uid=device_uid,
            series_number=series.series_number("sr", model_info),
            tracking_uids=[derived_uid("tracking", study_uid, *model_key, *r.sop_uids) for r in results],
            series_description=series.series_description("sr", model_info),
        )
        written.append(atomic_write_dataset(folder / object_file_name("SR", str(sr.SOPInstanceUID)), stamp.apply(sr)))

    positives = [r for r in ordered if r.positive]
    positive_uids = [uid for r in positives for uid in r.sop_uids]
    if "kos" in chosen and positive_uids:
        kos = build_key_object_selection(
            [by_uid[uid] for uid in positive_uids],
            model_info,
            series_uid=series.series_uid("kos", study_uid, model_info),
            sop_uid=series.instance_uid("kos", study_uid, model_info, positive_uids),
            device_uid=device_uid,
            series_number=series.series_number("kos", model_info),
            series_description=series.series_description("kos", model_info),
        )
        written.append(atomic_write_dataset(folder / object_file_name("KO", str(kos.SOPInstanceUID)), stamp.apply(kos)))

    if "pr" in chosen:
        raw_by_uid = {str(s.SOPInstanceUID): s for s in sources if "SOPInstanceUID" in s}
        overlays = [r for r in positives if r.region is not None and len(r.sop_uids) == 1]
        for number, result in enumerate(overlays, start=1):
            uid = result.sop_uids[0]
            header = presentation_header(by_uid[uid], raw_by_uid.get(uid, by_uid[uid]))
            gsps = build_fracture_gsps(
                header,
                result,
                model_info,
                series_uid=series.series_uid("pr", study_uid, model_info),
                sop_uid=series.instance_uid("pr", study_uid, model_info, [result.content_key()]),
                series_number=series.series_number("pr", model_info),
                instance_number=number,
                series_description=series.series_description("pr", model_info),
            )
            written.append(atomic_write_dataset(folder / object_file_name("PR", str(gsps.SOPInstanceUID)), stamp.apply(gsps)))

    if heatmaps and "sc" in chosen:
        maps = list(heatmaps.values()) if isinstance(heatmaps, Mapping) else list(heatmaps)
        for number, heatmap in enumerate(sorted(maps, key=lambda h: h.sop_uid), start=1):
            header = by_uid.get(heatmap.sop_uid)
            if header is None:
                raise ValueError(f"heatmap for {heatmap.sop_uid!r}, which is not among the study sources")
            written.append(write_heatmap_output(header, heatmap, model_info, out_dir, instance_number=number))
    logger.debug("study %s: wrote %d DICOM object(s)", folder.name, len(written))
    return written


def _with_window(path: str | os.PathLike, header: Dataset) -> Dataset:
    """``header`` with a percentile window from the pixels when the file has no usable VOI window."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    if has_display_window(header):
        return header
    try:
        full = pydicom.dcmread(os.fspath(path), force=True)
        centre, width = window_from_pixels(apply_modality_lut(full.pixel_array, full))
    except Exception as err:  # an undecodable file keeps its header: the viewer's own window then applies
        logger.warning("no display window derived for %s: %s", os.fspath(path), err)
        return header
    header.WindowCenter, header.WindowWidth = f"{centre:.2f}", f"{width:.2f}"
    return header


def write_study_outputs_from_files(
    paths: Sequence[str | os.PathLike],
    results: Sequence[ImageResult],
    model_info: ModelIdentity,
    out_dir: str | os.PathLike,
    outputs: Iterable[str] | None = None,
) -> list[Path]:
    """``write_study_outputs`` with the sources given as file paths (headers are read here, no pixels,
    except a window for a GSPS whose source has none), so the work can run in another process and
    the caller never holds the datasets."""
    import pydicom

    headers = [pydicom.dcmread(os.fspath(p), stop_before_pixels=True, force=True) for p in paths]
    chosen = parse_outputs(outputs)
    if "pr" in chosen:
        overlaid = {r.sop_uids[0] for r in results if r.positive and r.region is not None and len(r.sop_uids) == 1}
        headers = [_with_window(p, h) if str(h.get("SOPInstanceUID", "")) in overlaid else h
                   for p, h in zip(paths, headers)]
    return write_study_outputs(headers, results, model_info, out_dir, outputs=chosen)


def write_heatmap_output(
    source: Dataset,
    heatmap: Heatmap,
    model_info: ModelIdentity,
    out_dir: str | os.PathLike,
    instance_number: int = 1,
) -> Path:
    """Write one Grad-CAM Secondary Capture for ``source`` (a header) into its study folder.

    Used on its own while streaming, so a heatmap is written as soon as it exists instead of
    being held until the study's last image.
    """
    header = clean_study_headers([source])[0]
    study_uid = str(header.StudyInstanceUID)
    sc = build_heatmap_sc(
        header,
        heatmap,
        model_info,
        series_uid=series.series_uid("sc", study_uid, model_info),
        sop_uid=series.instance_uid("sc", study_uid, model_info, [heatmap.sop_uid]),
        series_number=series.series_number("sc", model_info),
        instance_number=instance_number,
        series_description=series.series_description("sc", model_info),
    )
    folder = study_folder(out_dir, study_uid)
    return atomic_write_dataset(folder / object_file_name("SC", str(sc.SOPInstanceUID)), series.Stamp.now().apply(sc))
