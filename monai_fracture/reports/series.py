"""Identity of the AI series: UIDs that follow content, series numbers per model, names and dates.

DICOM's UID rule: one UID, one content. A SOP Instance UID is therefore derived from the study,
the model identity *and* a digest of what the object says (decisions, thresholds, regions), so
the same model on the same study with the same result rewrites the same instance, while a new
threshold, a retrained model or a different region gives a new instance. PACS keep both:
Orthanc, by default (``OverwriteInstances: false``), ignores a second store of a known SOP
Instance UID, which would otherwise hide the newer result (see docs/scoring.md).

Series UIDs and numbers are per study, model and object family, so two models' results never
share a series, and a PACS lists each model's SR, KOS, GSPS and SC apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from pydicom.dataset import Dataset
from pydicom.uid import UID

from monai_fracture.reports import concepts
from monai_fracture.reports.files import derived_uid, stable_hash
from monai_fracture.reports.results import ModelIdentity

#: Object families, their modality and their offset in the model's block of series numbers.
FAMILIES = {"sr": ("SR", 1), "kos": ("KO", 2), "pr": ("PR", 3), "sc": ("SC", 4)}
_DESCRIPTIONS = {
    "sr": "AI fracture report",
    "kos": "AI fracture key images",
    "pr": "AI fracture overlay",
    "sc": "AI fracture heatmap",
}
#: Series numbers live in 90000..99999: ten per model (a 1 in 1000 chance that two models share a block).
SERIES_NUMBER_BASE = 90000


def model_key(model_info: ModelIdentity) -> tuple[str, str]:
    return (str(model_info.name), str(model_info.version))


def series_number(family: str, model_info: ModelIdentity) -> int:
    """``90000 + 10 * (model hash mod 1000) + family offset``: stable per model, different between models."""
    block = int(stable_hash(*model_key(model_info), length=8), 16) % 1000
    return SERIES_NUMBER_BASE + 10 * block + FAMILIES[family][1]


def series_description(family: str, model_info: ModelIdentity) -> str:
    """E.g. ``AI fracture report (fracatlas 0.2.0)``; at most 64 characters (LO)."""
    name, version = model_key(model_info)
    suffix = f" ({name} {version})"
    text = _DESCRIPTIONS[family] + suffix
    if len(text) > 64:
        keep = max(0, 64 - len(_DESCRIPTIONS[family]) - len(version) - 4)
        text = f"{_DESCRIPTIONS[family]} ({name[:keep]} {version})"[:64]
    return text


def series_uid(family: str, study_uid: str, model_info: ModelIdentity) -> str:
    return derived_uid(f"{family}-series", study_uid, *model_key(model_info))


def instance_uid(family: str, study_uid: str, model_info: ModelIdentity, content: Iterable[object]) -> str:
    """A UID from the study, the model, the package version and a digest of ``content`` (what the object says)."""
    from monai_fracture import __version__  # new code (e.g. a fixed heatmap) is new content too

    digest = stable_hash(*[repr(part) for part in content], length=32)
    return derived_uid(family, study_uid, *model_key(model_info), __version__, digest)


@dataclass(frozen=True)
class Placement:
    """Where a new object goes: its series and instance UIDs, numbers and description (see ``placement``)."""

    series_uid: str
    sop_uid: str
    series_number: int
    series_description: str
    instance_number: int = 1

    def highdicom_kwargs(self) -> dict[str, object]:
        """The keyword arguments every highdicom document/image constructor takes for these attributes."""
        return {
            "series_instance_uid": UID(self.series_uid),
            "series_number": self.series_number,
            "sop_instance_uid": UID(self.sop_uid),
            "instance_number": self.instance_number,
            "manufacturer": concepts.MANUFACTURER,
            "series_description": self.series_description[:64],
        }


def placement(family: str, study_uid: str, model_info: ModelIdentity, content: Iterable[object],
              instance_number: int = 1) -> Placement:
    """The series of ``family`` for this study and model, and the instance that says ``content``."""
    return Placement(
        series_uid=series_uid(family, study_uid, model_info),
        sop_uid=instance_uid(family, study_uid, model_info, content),
        series_number=series_number(family, model_info),
        series_description=series_description(family, model_info),
        instance_number=instance_number,
    )


@dataclass(frozen=True)
class Stamp:
    """When an object was made: DICOM DA and TM strings (local time, like the source study's dates)."""

    date: str
    time: str

    @classmethod
    def now(cls) -> Stamp:
        moment = datetime.now()
        return cls(moment.strftime("%Y%m%d"), moment.strftime("%H%M%S"))

    def apply(self, dataset: Dataset) -> Dataset:
        """Set SeriesDate/Time, InstanceCreationDate/Time and (but for a presentation state, which has
        PresentationCreationDate/Time instead) ContentDate/Time, one moment for all."""
        dataset.SeriesDate, dataset.SeriesTime = self.date, self.time
        if dataset.get("Modality") != "PR":
            dataset.ContentDate, dataset.ContentTime = self.date, self.time
        dataset.InstanceCreationDate, dataset.InstanceCreationTime = self.date, self.time
        return dataset
