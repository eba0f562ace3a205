"""Clean copies of source headers, so that derived objects inherit only valid patient/study values.

highdicom copies the patient and study modules from the first evidence dataset and reads
them as attributes, so a source that lacks PatientName or carries a hostile value (a date
that is not a date, a 300-character ID, control characters) would either crash the writer
or produce an object that PACS and ``dciodvfy`` reject. We hand highdicom a minimal header
instead: the identifying UIDs plus the patient/study attributes, each valid or empty.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from pydicom import config
from pydicom.dataset import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.uid import UID
from pydicom.valuerep import MAX_VALUE_LEN, validate_value

from monai_fracture.reports.text import without_controls

#: Patient and study attributes a derived object must carry so a PACS files it into the source study.
PATIENT_STUDY_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyID",
)
#: Per-instance attributes kept for references and for the image library.
INSTANCE_KEYWORDS: tuple[str, ...] = (
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "Rows",
    "Columns",
    "PatientOrientation",
    "Laterality",
    "ImageLaterality",
    "SpecificCharacterSet",
)
_PATIENT_SEX = {"M", "F", "O"}
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


class EvidenceError(ValueError):
    """A source header that cannot be referenced (no valid SOP/Study UID)."""


def is_valid_uid(value: object) -> bool:
    """A UID that DICOM accepts: dotted decimal, no leading zeros, at most 64 characters."""
    return isinstance(value, str) and 0 < len(value) <= 64 and bool(_UID.fullmatch(value))  # "$" would pass a "\n"


def _clean_value(keyword: str, value: object) -> object:
    """``value`` when it is valid for the attribute's VR, else a repaired or empty value."""
    vr = dictionary_VR(keyword)
    if value is None:
        return ""
    if keyword == "PatientSex":
        text = str(value).strip().upper()
        return text if text in _PATIENT_SEX else ""
    if vr in {"DA", "TM", "DT"}:
        text = str(value).strip()
        try:
            validate_value(vr, text, config.RAISE)
        except (ValueError, TypeError):
            return ""
        return text
    if vr in {"LO", "SH", "PN", "CS", "LT", "ST"}:
        text = without_controls(value, vr)
        if vr != "PN":
            text = text.replace("\\", " ")
        limit = MAX_VALUE_LEN.get(vr)
        if vr == "PN":
            limit = 64 * 3 + 2  # per component group; keep whole groups below the bound
            text = "=".join(group[:64] for group in text.split("=")[:3])
        if limit and len(text) > limit:
            text = text[:limit]
        try:
            validate_value(vr, text, config.RAISE)
        except (ValueError, TypeError):
            return ""
        return text
    return value


def clean_source_header(source: Dataset, study: Dataset | None = None) -> Dataset:
    """A minimal, valid header for ``source``; patient/study values come from ``study`` when given.

    Raises ``EvidenceError`` when the instance cannot be referenced at all.
    """
    study = source if study is None else study
    sop_uid = source.get("SOPInstanceUID")
    study_uid = study.get("StudyInstanceUID")
    if not is_valid_uid(str(sop_uid) if sop_uid is not None else None):
        raise EvidenceError(f"invalid SOPInstanceUID {str(sop_uid)[:80]!r}")
    if not is_valid_uid(str(study_uid) if study_uid is not None else None):
        raise EvidenceError(f"invalid StudyInstanceUID {str(study_uid)[:80]!r}")
    header = Dataset()
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword == "StudyInstanceUID":
            header.StudyInstanceUID = UID(str(study_uid))
            continue
        setattr(header, keyword, _clean_value(keyword, study.get(keyword)))
    for keyword in INSTANCE_KEYWORDS:
        value = source.get(keyword)
        if value is None:
            continue
        if keyword.endswith("UID"):
            if not is_valid_uid(str(value)):
                if keyword == "SeriesInstanceUID":
                    continue
                raise EvidenceError(f"invalid {keyword} {str(value)[:80]!r}")
            value = UID(str(value))
        setattr(header, keyword, value)
    if "SOPClassUID" not in header:
        raise EvidenceError("no SOPClassUID")
    return header


def _declare_character_set(header: Dataset) -> None:
    """Sources that carry non-ASCII text without declaring a character set are common (pydicom
    then reads the bytes as Latin-1): declare the repertoire the text is in, so the derived object
    is valid and the bytes of names and IDs stay the same."""
    if header.get("SpecificCharacterSet"):
        return
    texts = [str(header.get(k, "")) for k in PATIENT_STUDY_KEYWORDS if k != "StudyInstanceUID"]
    if all(t.isascii() for t in texts):
        return
    try:
        for text in texts:
            text.encode("latin-1")
        header.SpecificCharacterSet = "ISO_IR 100"
    except UnicodeEncodeError:
        header.SpecificCharacterSet = "ISO_IR 192"


def clean_study_headers(sources: Sequence[Dataset]) -> list[Dataset]:
    """Clean headers for all sources of one study, patient/study values from the first one."""
    if not sources:
        raise EvidenceError("no source instances")
    first = sources[0]
    headers = [clean_source_header(source, first) for source in sources]
    for header in headers:
        _declare_character_set(header)
    return headers


def headers_by_sop_uid(headers: Iterable[Dataset]) -> dict[str, Dataset]:
    return {str(h.SOPInstanceUID): h for h in headers}
