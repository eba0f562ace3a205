"""Walk the inputs and decide, from headers only, what each file is and how it will be scored.

The catalog holds one small record per file (no pixel data, no pydicom datasets), so it stays
small for folders of many thousands of studies. DICOM radiographs become one work item per
image; CT series become one work item per series (a volume); everything else gets its final
``skipped`` or ``failed`` row here.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from monai_fracture.io import ImageReadError, ReadFailure, scan_dicom_headers
from monai_fracture.io.modalities import RADIOGRAPH_MODALITIES
from monai_fracture.io.sniff import IMAGE_SUFFIXES
from monai_fracture.sources.folder import walk_files

logger = logging.getLogger(__name__)

#: Secondary captures are radiographs when they are greyscale (scanned films, exports).
GREYSCALE_CAPTURE_MODALITIES = frozenset({"OT", "SC"})
CT_MODALITIES = frozenset({"CT"})
NOT_AN_IMAGE_FILE = "not an image file"


@dataclass
class FileRecord:
    """One input file: identity from its header and, when decided at scan time, its final status."""

    path: str
    format: str | None = None  # dicom / nifti / png / jpeg
    family: str | None = None  # "xr" or "ct" for files that will be scored
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None
    status: str | None = None  # skipped / failed when decided here
    reason: str = ""
    num_frames: int = 1
    position: float | None = None  # slice position for sorting CT series


@dataclass
class WorkItem:
    """What one model call scores: a radiograph (one file) or a CT volume (a series of files)."""

    family: str  # "xr" or "ct"
    paths: tuple[str, ...]
    study_key: str  # StudyInstanceUID, or the path for files without one
    study_uid: str | None
    series_uid: str | None
    sop_uids: tuple[str | None, ...]
    is_dicom: bool = True


@dataclass
class Catalog:
    """Every input file once: records with a final row now, and the work items for the rest."""

    records: dict[str, FileRecord] = field(default_factory=dict)
    items: list[WorkItem] = field(default_factory=list)

    def decided(self) -> Iterator[FileRecord]:
        return (r for r in self.records.values() if r.status is not None)


def reason_text(failure: ReadFailure | str, detail: str = "") -> str:
    """``"<ReadFailure value>: <detail>"``, the ``reason`` column of results.csv."""
    value = failure.value if isinstance(failure, ReadFailure) else str(failure)
    return f"{value}: {detail}" if detail else value


def walk_inputs(inputs: Iterable[str | os.PathLike], exclude: Sequence[str | os.PathLike] = ()) -> list[str]:
    """All files under ``inputs``: :func:`monai_fracture.sources.folder.walk_files` (unreadable folders listed)."""
    return walk_files(inputs, exclude)


def _has_suffix(path: str, suffixes: Sequence[str]) -> bool:
    return path.lower().endswith(tuple(suffixes))


def _family_for_dicom(meta: dict) -> tuple[str | None, str]:
    modality = (meta.get("modality") or "").upper()
    photometric = (meta.get("photometric") or "").upper()
    if modality in RADIOGRAPH_MODALITIES:
        return "xr", ""
    if modality in GREYSCALE_CAPTURE_MODALITIES and photometric.startswith("MONOCHROME"):
        return "xr", ""
    if modality in CT_MODALITIES:
        return "ct", ""
    shown = modality or "none"
    if modality in GREYSCALE_CAPTURE_MODALITIES:
        return None, f"unsupported_modality: {shown} with photometric {photometric or 'unknown'} (not a greyscale radiograph)"
    return None, f"unsupported_modality: {shown} (the models classify radiographs and CT)"


def scan_file(path: str) -> FileRecord:
    """Header-only look at one file (``monai_fracture.io.scan_dicom_headers``); never raises."""
    record = FileRecord(path=path)
    if os.path.isdir(path):  # only folders that could not be listed come here (walk_inputs)
        try:
            os.listdir(path)
            detail = "folder listed late"
        except OSError as err:
            detail = f"folder cannot be listed: {err.strerror or err}"
        record.status, record.reason = "failed", reason_text(ReadFailure.NOT_FOUND, detail)
        return record
    try:
        entry = scan_dicom_headers([path], progress=False)[0]
    except Exception as err:  # a reader bug must not stop the walk; name it
        record.status, record.reason = "failed", reason_text(ReadFailure.INVALID_VALUE, f"{type(err).__name__}: {err}")
        return record
    record.format = entry.get("format")
    record.study_uid, record.series_uid, record.sop_uid = entry.get("study_uid"), entry.get("series_uid"), entry.get("sop_uid")
    error = entry.get("error")
    if error is not None:
        reason = error.reason if isinstance(error, ImageReadError) else ReadFailure.INVALID_VALUE
        detail = error.detail if isinstance(error, ImageReadError) else str(error)
        if reason == ReadFailure.NOT_DICOM and not _has_suffix(path, IMAGE_SUFFIXES):
            record.status, record.reason = "skipped", NOT_AN_IMAGE_FILE
        elif reason in (ReadFailure.NOT_AN_IMAGE, ReadFailure.NO_PIXEL_DATA):
            record.status, record.reason = "skipped", reason_text(reason, detail)
        else:
            record.status, record.reason = "failed", reason_text(reason, detail)
        return record
    if record.format == "nifti":
        return _scan_nifti(record)
    if record.format != "dicom":
        record.family = "xr"  # PNG / JPEG: a radiograph exported as a picture
        return record
    family, why = _family_for_dicom(entry)
    if family is None:
        record.status, record.reason = "skipped", why
        return record
    record.family = family
    record.num_frames = entry.get("num_frames") or 1
    position, orientation = entry.get("image_position"), entry.get("image_orientation")
    if position is not None and orientation is not None:
        normal = (
            orientation[1] * orientation[5] - orientation[2] * orientation[4],
            orientation[2] * orientation[3] - orientation[0] * orientation[5],
            orientation[0] * orientation[4] - orientation[1] * orientation[3],
        )
        record.position = sum(p * n for p, n in zip(position, normal))
    return record


def _scan_nifti(record: FileRecord) -> FileRecord:
    try:
        import nibabel as nib

        shape = tuple(int(s) for s in nib.load(record.path).shape)
    except Exception as err:  # nibabel raises ImageFileError, EOFError, ValueError ...
        record.status, record.reason = "failed", reason_text(ReadFailure.UNDECODABLE, f"NIfTI header: {err}")
        return record
    spatial = [s for s in shape if s > 1]
    record.family = "ct" if len(spatial) >= 3 else "xr"
    return record


def build_catalog(paths: Sequence[str], ct_enabled: bool, progress: bool = False) -> Catalog:
    """Scan headers and turn files into work items (radiographs per image, CT per series)."""
    from tqdm.auto import tqdm

    catalog = Catalog()
    ct_series: dict[tuple[str, str], list[FileRecord]] = defaultdict(list)
    for path in tqdm(paths, desc="scan headers", unit="file", disable=not progress, leave=False):
        record = scan_file(path)
        catalog.records[path] = record
        if record.status is not None:
            continue
        if record.family == "ct" and record.format == "dicom":
            ct_series[(record.study_uid or "", record.series_uid or record.path)].append(record)
            continue
        if record.family == "ct" and not ct_enabled:
            record.status, record.reason = "skipped", "no_ct_model: a CT volume needs --ct-model"
            continue
        catalog.items.append(
            WorkItem(
                family=record.family or "xr",
                paths=(path,),
                study_key=record.study_uid or path,
                study_uid=record.study_uid,
                series_uid=record.series_uid,
                sop_uids=(record.sop_uid,),
                is_dicom=record.format == "dicom",
            )
        )
    for (study_uid, series_uid), members in ct_series.items():
        if not ct_enabled:
            for member in members:
                member.status, member.reason = "skipped", "no_ct_model: CT series need --ct-model"
            continue
        if len(members) == 1 and members[0].num_frames <= 1:
            members[0].status = "skipped"
            members[0].reason = "unsupported_geometry: a single CT slice is not a volume"
            continue
        members.sort(key=lambda r: (r.position is None, r.position or 0.0, r.path))
        catalog.items.append(
            WorkItem(
                family="ct",
                paths=tuple(m.path for m in members),
                study_key=study_uid or members[0].path,
                study_uid=study_uid or None,
                series_uid=series_uid,
                sop_uids=tuple(m.sop_uid for m in members),
            )
        )
    # Study by study, so studies complete (and their reports are written) as the stream goes on.
    catalog.items.sort(key=lambda w: (w.study_key, w.family, w.paths[0]))
    return catalog
