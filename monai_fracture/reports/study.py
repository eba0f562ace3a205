"""All DICOM outputs of one study: the SR, the KOS of positives, and one SC per heatmap."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydicom.dataset import Dataset

from monai_fracture.reports.evidence import clean_study_headers
from monai_fracture.reports.files import atomic_write_dataset, derived_uid, object_file_name, study_folder
from monai_fracture.reports.keyimage import build_heatmap_sc, build_key_object_selection
from monai_fracture.reports.results import Heatmap, ImageResult, ModelIdentity
from monai_fracture.reports.sr import build_fracture_sr

logger = logging.getLogger(__name__)

SR_SERIES_NUMBER = 9901
KOS_SERIES_NUMBER = 9902
SC_SERIES_NUMBER = 9903


def _model_key(model_info: ModelIdentity) -> tuple[str, str]:
    return (str(model_info.name), str(model_info.version))


def write_study_outputs(
    study_sources: Sequence[Dataset],
    results: Sequence[ImageResult],
    model_info: ModelIdentity,
    out_dir: str | os.PathLike,
    heatmaps: Mapping[str, Heatmap] | Sequence[Heatmap] | None = None,
) -> list[Path]:
    """Write the SR (always), the KOS (only when some result is positive) and SCs (one per heatmap).

    ``study_sources`` are headers (pixel data not needed) of the instances the ``results`` refer
    to, all of one study; files go to ``out_dir/study-<hash>/`` and are named by the generated
    SOP Instance UIDs. UIDs are derived from the study, the model and the sources, so writing
    the same study again replaces the files. Returns the written paths.
    """
    if not results:
        raise ValueError("no results to report")
    headers = clean_study_headers(list(study_sources))
    by_uid = {str(h.SOPInstanceUID): h for h in headers}
    missing = [uid for r in results for uid in r.sop_uids if uid not in by_uid]
    if missing:
        raise ValueError(f"results refer to {len(missing)} instance(s) not among the study sources: {missing[:3]}")
    study_uid = str(headers[0].StudyInstanceUID)
    model_key = _model_key(model_info)
    folder = study_folder(out_dir, study_uid)
    device_uid = derived_uid("device", *model_key)
    written: list[Path] = []

    sr = build_fracture_sr(
        headers,
        results,
        model_info,
        series_uid=derived_uid("sr-series", study_uid, *model_key),
        sop_uid=derived_uid("sr", study_uid, *model_key),
        device_uid=device_uid,
        series_number=SR_SERIES_NUMBER,
        tracking_uids=[derived_uid("tracking", study_uid, *model_key, *r.sop_uids) for r in results],
    )
    written.append(atomic_write_dataset(folder / object_file_name("SR", str(sr.SOPInstanceUID)), sr))

    positive_uids = [uid for r in results if r.positive for uid in r.sop_uids]
    if positive_uids:
        kos = build_key_object_selection(
            [by_uid[uid] for uid in positive_uids],
            model_info,
            series_uid=derived_uid("kos-series", study_uid, *model_key),
            sop_uid=derived_uid("kos", study_uid, *model_key),
            device_uid=device_uid,
            series_number=KOS_SERIES_NUMBER,
        )
        written.append(atomic_write_dataset(folder / object_file_name("KO", str(kos.SOPInstanceUID)), kos))

    if heatmaps:
        maps = list(heatmaps.values()) if isinstance(heatmaps, Mapping) else list(heatmaps)
        for number, heatmap in enumerate(sorted(maps, key=lambda h: h.sop_uid), start=1):
            header = by_uid.get(heatmap.sop_uid)
            if header is None:
                raise ValueError(f"heatmap for {heatmap.sop_uid!r}, which is not among the study sources")
            written.append(write_heatmap_output(header, heatmap, model_info, out_dir, instance_number=number))
    logger.debug("study %s: wrote %d DICOM object(s)", folder.name, len(written))
    return written


def write_study_outputs_from_files(
    paths: Sequence[str | os.PathLike],
    results: Sequence[ImageResult],
    model_info: ModelIdentity,
    out_dir: str | os.PathLike,
) -> list[Path]:
    """``write_study_outputs`` with the sources given as file paths (headers are read here, no pixels),
    so the work can run in another process and the caller never holds the datasets."""
    import pydicom

    headers = [pydicom.dcmread(os.fspath(p), stop_before_pixels=True, force=True) for p in paths]
    return write_study_outputs(headers, results, model_info, out_dir)


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
    model_key = _model_key(model_info)
    sc = build_heatmap_sc(
        header,
        heatmap,
        model_info,
        series_uid=derived_uid("sc-series", study_uid, *model_key),
        sop_uid=derived_uid("sc", study_uid, heatmap.sop_uid, *model_key),
        series_number=SC_SERIES_NUMBER,
        instance_number=instance_number,
    )
    folder = study_folder(out_dir, study_uid)
    return atomic_write_dataset(folder / object_file_name("SC", str(sc.SOPInstanceUID)), sc)
