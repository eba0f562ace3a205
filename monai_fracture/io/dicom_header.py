"""Parsing a DICOM stream safely and turning its header into our metadata dict.

Everything here works on the header only; pixel decoding lives in ``dicom_pixels``.
"""

from __future__ import annotations

import io
import logging
import math
import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from monai_fracture.sources.folder import walk_files

from .errors import ImageReadError, ReadFailure
from .meta import empty_meta
from .pixel_limits import check_inflated_size
from .sniff import has_dicom_preamble, looks_like_bare_dicom, open_regular

logger = logging.getLogger(__name__)

PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

#: Modalities whose objects carry no radiological image (or whose pixels are not intensities:
#: SEG holds labels, RTDOSE a dose grid). We classify images, so these are NOT_AN_IMAGE.
NON_IMAGE_MODALITIES = frozenset(
    {
        "SR", "RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "PR", "KO", "SEG", "REG", "FID",
        "ECG", "HD", "EPS", "RESP", "AU", "DOC", "ANN", "RWV", "PLAN", "RAW", "RTINTENT",
        "RTSEGANN", "RTRAD", "M3D", "OSS", "POS", "BI", "MS",
    }
)
#: Words in a SOP Class name that mark non-image objects (highdicom/pydicom UID names).
_NON_IMAGE_CLASS_WORDS = (
    "Structured Report", " SR ", "SR Storage", "Segmentation", "RT Dose", "RT Structure", "RT Plan",
    "RT Ion Plan", "RT Beams Treatment Record", "Treatment Record", "Presentation State",
    "Key Object Selection", "Waveform", "ECG", "Encapsulated", "Raw Data", "Registration",
    "Fiducials", "Media Storage Directory", "Annotation", "Real World Value Mapping",
    "Surface Segmentation", "Measurement Report", "Spectroscopy", "Hanging Protocol",
    "Color Palette", "Implant", "Protocol", "Audio", "Tractography",
)
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

def _fix_transfer_syntax(ds: Dataset) -> None:
    """Files without file meta: record the encoding pydicom found so decoders know it."""
    if not hasattr(ds, "file_meta") or ds.file_meta is None:
        ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" in ds.file_meta:
        return
    implicit, little = ds.original_encoding
    if implicit is None:
        return
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


_PIXEL_TAGS = {struct.pack(e + "HH", 0x7FE0, element) for e in "<>" for element in (0x0008, 0x0009, 0x0010)}


def parse_dicom_header(path: str | Path) -> tuple[Dataset, bool]:
    """The header only (``stop_before_pixels``) and whether a pixel data element follows it.

    pydicom leaves the file positioned at the pixel data tag it stopped before, so its presence
    is known without reading a byte of pixels.
    """
    follows = False

    def read(fh: Any) -> Dataset:
        nonlocal follows
        ds = pydicom.dcmread(fh, force=True, stop_before_pixels=True)
        # a deflated body cannot be peeked at: assume pixels, the full read will tell
        follows = fh.read(4) in _PIXEL_TAGS or ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
        return ds

    ds = _parse(path, None, read)
    return ds, follows


def parse_dicom(path: str | Path, data: bytes | None = None) -> Dataset:
    """Parse a whole DICOM stream (with or without preamble) after the cheap sanity check."""
    return _parse(path, data, lambda source: pydicom.dcmread(source, force=True))


def _parse(path: str | Path, data: bytes | None, reader: Any) -> Dataset:
    try:
        if data is None:
            with open_regular(path) as fh:
                head = fh.read(512)
                fh.seek(0, 2)
                size = fh.tell()
        else:
            head, size = data[:512], len(data)
    except OSError as exc:
        raise ImageReadError(path, ReadFailure.NOT_FOUND, f"cannot open: {exc.strerror or exc}") from None
    preamble = has_dicom_preamble(head)
    if not preamble and not looks_like_bare_dicom(head, size):
        raise ImageReadError(path, ReadFailure.NOT_DICOM, "no DICOM preamble and no plausible DICOM element at the start")
    try:
        if data is not None:
            ds = reader(_bounded(io.BytesIO(data), path, preamble))
        else:
            with open_regular(path) as fh:
                ds = reader(_bounded(fh, path, preamble))
        if preamble and "TransferSyntaxUID" not in (ds.file_meta or {}) and "SOPClassUID" not in ds:
            # "DICM" followed by noise parses as a few junk elements: a broken file, not a non-image
            raise ImageReadError(path, ReadFailure.INVALID_VALUE, "DICM preamble but no file meta and no SOP Class UID")
        _fix_transfer_syntax(ds)
        n_elements = len(ds)  # touches the top level only
    except (MemoryError, ImageReadError):
        raise
    except EOFError as exc:
        raise ImageReadError(path, ReadFailure.TRUNCATED, f"stream ends inside the header: {exc}") from None
    except Exception as exc:  # pydicom raises many types on corrupt streams
        raise ImageReadError(path, ReadFailure.NOT_DICOM, f"cannot be parsed as DICOM: {type(exc).__name__}: {exc}") from None
    if n_elements == 0:
        raise ImageReadError(path, ReadFailure.NOT_DICOM, "no data elements")
    return ds


def _bounded(handle: Any, path: str | Path, preamble: bool) -> Any:
    """The handle back at its start, after refusing a deflated body that inflates past the limit
    (pydicom inflates it in one unbounded call, even for a header-only read)."""
    if preamble:
        handle.seek(128 + 4)
        meta = pydicom.filereader._read_file_meta_info(handle)
        if meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
            check_inflated_size(handle, path)
        handle.seek(0)
    return handle


def _str(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    """``count`` finite floats from a multi-valued element, else None."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        return None
    try:
        values = tuple(float(v) for v in (value if hasattr(value, "__iter__") else [value]))
    except (TypeError, ValueError, OverflowError):
        return None
    if len(values) != count or not all(math.isfinite(v) for v in values):
        return None
    return values


def functional_group_item(ds: Dataset, sequence: str, frame: int = 0) -> Dataset | None:
    """An item of an enhanced multi-frame functional group (per-frame wins over shared)."""
    for container, idx in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        groups = ds.get(container)
        if groups and len(groups) > idx:
            seq = groups[idx].get(sequence)
            if seq:
                return seq[0]
    return None


def pixel_spacing(ds: Dataset) -> tuple[tuple[float, float] | None, str | None]:
    """(row spacing, column spacing) in mm and the tag it came from.

    Pixel Spacing (patient plane) wins over Imager Pixel Spacing (detector plane); the latter is
    what most CR/DX files carry and is used as is (no magnification correction).
    """
    for keyword in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"):
        values = _floats(ds.get(keyword), 2)
        if values and all(v > 0 for v in values):
            return (values[0], values[1]), keyword
    item = functional_group_item(ds, "PixelMeasuresSequence")
    if item is not None:
        values = _floats(item.get("PixelSpacing"), 2)
        if values and all(v > 0 for v in values):
            return (values[0], values[1]), "PixelMeasuresSequence"
    return None, None


def plane_geometry(ds: Dataset, frame: int = 0) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """(Image Orientation (Patient), Image Position (Patient)) of a frame, either may be None."""
    orientation = _floats(ds.get("ImageOrientationPatient"), 6)
    position = _floats(ds.get("ImagePositionPatient"), 3)
    if orientation is None:
        item = functional_group_item(ds, "PlaneOrientationSequence", frame)
        orientation = _floats(item.get("ImageOrientationPatient"), 6) if item is not None else None
    if position is None:
        item = functional_group_item(ds, "PlanePositionSequence", frame)
        position = _floats(item.get("ImagePositionPatient"), 3) if item is not None else None
    return orientation, position


def non_image_reason(ds: Dataset) -> str | None:
    """Why this object is not an image we classify, or None when it is one."""
    media_class = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "")
    if media_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        return "DICOMDIR (media directory)"
    sop_class = _str(ds, "SOPClassUID") or media_class or ""
    modality = (_str(ds, "Modality") or "").upper()
    if modality in NON_IMAGE_MODALITIES:
        return f"modality {modality} ({UID(sop_class).name if sop_class else 'no SOP class'})"
    if sop_class:
        name = f" {UID(sop_class).name} "
        if any(word in name for word in _NON_IMAGE_CLASS_WORDS):
            return f"SOP class {name.strip()}"
    return None


def has_pixel_data(ds: Dataset) -> bool:
    return any(keyword in ds for keyword in PIXEL_DATA_KEYWORDS)


def check_is_image(ds: Dataset, path: str | Path, pixels_follow: bool = False) -> None:
    """Raise NOT_AN_IMAGE / NO_PIXEL_DATA for objects that hold no usable image.

    ``pixels_follow``: a header-only read found a pixel data tag after the header.
    """
    reason = non_image_reason(ds)
    if reason:
        raise ImageReadError(path, ReadFailure.NOT_AN_IMAGE, reason)
    if not (pixels_follow or has_pixel_data(ds)):
        raise ImageReadError(path, ReadFailure.NO_PIXEL_DATA, "no (7FE0,0010) Pixel Data element")


def header_meta(ds: Dataset, path: str | Path | None) -> dict[str, Any]:
    """Identifying and geometric metadata from the header (no pixel work)."""
    meta = empty_meta(path, "dicom")
    spacing, spacing_source = pixel_spacing(ds)
    orientation, position = plane_geometry(ds)
    laterality = _str(ds, "ImageLaterality") or _str(ds, "Laterality")
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        frames = None
    bits_stored = ds.get("BitsStored")
    meta.update(
        study_uid=_str(ds, "StudyInstanceUID"),
        series_uid=_str(ds, "SeriesInstanceUID"),
        sop_uid=_str(ds, "SOPInstanceUID") or _str(ds.file_meta, "MediaStorageSOPInstanceUID"),
        sop_class_uid=_str(ds, "SOPClassUID"),
        patient_id=_str(ds, "PatientID"),
        accession_number=_str(ds, "AccessionNumber"),
        modality=(_str(ds, "Modality") or None),
        body_part=_str(ds, "BodyPartExamined"),
        view_position=_str(ds, "ViewPosition"),
        laterality=laterality,
        spacing=spacing,
        spacing_source=spacing_source,
        photometric=_str(ds, "PhotometricInterpretation"),
        bits_stored=int(bits_stored) if isinstance(bits_stored, int) else None,
        num_frames=frames,
        transfer_syntax=str(ds.file_meta.get("TransferSyntaxUID")) if ds.file_meta.get("TransferSyntaxUID") else None,
        image_orientation=orientation,
        image_position=position,
        instance_number=_int_or_none(ds.get("InstanceNumber")),
        frame_of_reference_uid=_str(ds, "FrameOfReferenceUID"),
        slice_thickness=_slice_thickness(ds),
    )
    return meta


def _slice_thickness(ds: Dataset) -> float | None:
    """Spacing Between Slices, else Slice Thickness: the slice step of a lone slice."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            value = float(ds.get(keyword) or 0)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value) and value > 0:
            return value
    return None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None and str(value).strip() != "" else None
    except (TypeError, ValueError):
        return None


def expand_paths(paths: str | Path | Iterable[str | Path], *, dicom_only: bool = False) -> list[Path]:
    """A file, a folder (walked recursively, hidden entries skipped) or a list of either.

    With ``dicom_only``, files found inside folders whose content is not DICOM (READMEs, DICOMDIR
    is kept and rejected later) are left out; files named explicitly are always kept.
    """
    from .sniff import is_dicom_file

    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    files: list[Path] = []
    for item in items:
        item = Path(item)
        if item.is_dir():
            root = os.path.abspath(item)  # found paths keep the caller's spelling of the folder
            found = (item / os.path.relpath(p, root) for p in walk_files(item, list_unreadable=False))
            files.extend(p for p in found if not dicom_only or is_dicom_file(p))
        else:
            files.append(item)
    return files
