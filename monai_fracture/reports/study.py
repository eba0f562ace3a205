"""All chosen DICOM outputs of one study, written by the registered writers (``reports.outputs``)."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from monai_fracture.reports import series
from monai_fracture.reports.evidence import clean_study_headers
from monai_fracture.reports.files import study_folder
from monai_fracture.reports.outputs import DEFAULT_OUTPUTS, OUTPUT_WRITERS, OUTPUTS, parse_outputs
from monai_fracture.reports.pr import has_display_window, window_from_pixels
from monai_fracture.reports.results import Heatmap, ImageResult, ModelIdentity
from monai_fracture.reports.sc import write_heatmap_output
from monai_fracture.reports.writer import StudyOutput

__all__ = ["DEFAULT_OUTPUTS", "OUTPUTS", "parse_outputs", "write_heatmap_output", "write_outputs",
           "write_outputs_from_files", "write_study_outputs", "write_study_outputs_from_files"]

logger = logging.getLogger(__name__)


def write_outputs(
    study_sources: Sequence[Dataset],
    results: Sequence[ImageResult],
    model_info: ModelIdentity,
    out_dir: str | os.PathLike,
    heatmaps: Mapping[str, Heatmap] | Sequence[Heatmap] | None = None,
    outputs: Iterable[str] | None = None,
) -> dict[str, list[Path]]:
    """Write the chosen objects for one study with the registered writers (``reports.outputs``):
    by default an SR, a KOS (when some result is positive), one GSPS per positive result with a
    region, and one SC per heatmap when ``heatmaps`` are given. Returns ``{output name: files written}``.

    ``study_sources`` are headers (pixel data not needed) of the instances the ``results`` refer
    to, all of one study; files go to ``out_dir/study-<hash>/`` and are named by their SOP
    Instance UIDs, which follow the content (``reports.series``): the same result again replaces
    the files, a different one adds new instances.
    """
    if not results:
        raise ValueError("no results to report")
    chosen = parse_outputs(outputs, heatmaps=bool(heatmaps) and outputs is None)
    sources = list(study_sources)
    headers = clean_study_headers(sources)
    by_uid = {str(h.SOPInstanceUID) for h in headers}
    missing = [uid for r in results for uid in r.sop_uids if uid not in by_uid]
    if missing:
        raise ValueError(f"results refer to {len(missing)} instance(s) not among the study sources: {missing[:3]}")
    study_uid = str(headers[0].StudyInstanceUID)
    maps = list(heatmaps.values()) if isinstance(heatmaps, Mapping) else list(heatmaps or [])
    study = StudyOutput(study_uid, headers, sources, list(results), model_info, study_folder(out_dir, study_uid),
                        Path(out_dir), series.Stamp.now(), maps)
    written = {name: OUTPUT_WRITERS[name].write(study) for name in chosen}
    logger.debug("study %s: wrote %d DICOM object(s)", study.folder.name, sum(len(v) for v in written.values()))
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


def write_outputs_from_files(
    paths: Sequence[str | os.PathLike],
    results: Sequence[ImageResult],
    model_info: ModelIdentity,
    out_dir: str | os.PathLike,
    outputs: Iterable[str] | None = None,
) -> dict[str, list[Path]]:
    """``write_outputs`` with the sources given as file paths (headers are read here, no pixels,
    except a window for a GSPS whose source has none), so the work can run in another process and
    the caller never holds the datasets."""
    import pydicom

    headers = [pydicom.dcmread(os.fspath(p), stop_before_pixels=True, force=True) for p in paths]
    chosen = parse_outputs(outputs)
    if "pr" in chosen:
        overlaid = {r.sop_uids[0] for r in results if r.positive and r.region is not None and len(r.sop_uids) == 1}
        headers = [_with_window(p, h) if str(h.get("SOPInstanceUID", "")) in overlaid else h
                   for p, h in zip(paths, headers)]
    return write_outputs(headers, results, model_info, out_dir, outputs=chosen)


def _as_list(function: Callable[..., dict[str, list[Path]]]) -> Callable[..., list[Path]]:
    """``function`` returning one list of every written path instead of ``{output name: paths}``."""
    @functools.wraps(function)
    def listed(*args: Any, **kwargs: Any) -> list[Path]:
        return [path for paths in function(*args, **kwargs).values() for path in paths]

    listed.__doc__ = f"``{function.__name__}`` as one list of the written paths."
    return listed


write_study_outputs = _as_list(write_outputs)
write_study_outputs_from_files = _as_list(write_outputs_from_files)
