"""What every output writer gets: one finished study (``StudyOutput``); it returns the files it wrote.

``StudyOutput`` holds the study's clean headers, its decisions and the model identity, and knows
where an object of a family goes (``placement``) and how it is saved (``save``), so a writer's
``write(study) -> list[Path]`` only builds its object (see ``reports.outputs`` for the registry).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

from monai_fracture.reports import series
from monai_fracture.reports.files import atomic_write_dataset, derived_uid, object_file_name
from monai_fracture.reports.results import Heatmap, ImageResult, ModelIdentity


@dataclass
class StudyOutput:
    """One study ready for its outputs.

    ``headers`` are clean source headers (``evidence.clean_study_headers``), ``sources`` the raw
    ones (display attributes a presentation state copies), ``results`` the decisions in the order
    they were made, ``heatmaps`` the Grad-CAM overlays to write as images (may be empty).
    """

    study_uid: str
    headers: list[Dataset]
    sources: list[Dataset]
    results: list[ImageResult]
    model_info: ModelIdentity
    folder: Path
    out_dir: Path
    stamp: series.Stamp
    heatmaps: list[Heatmap] = field(default_factory=list)

    @property
    def by_uid(self) -> dict[str, Dataset]:
        return {str(h.SOPInstanceUID): h for h in self.headers}

    @property
    def ordered(self) -> list[ImageResult]:
        """Results sorted by their instances: content digests do not depend on scoring order."""
        return sorted(self.results, key=lambda r: r.sop_uids)

    @property
    def positives(self) -> list[ImageResult]:
        return [r for r in self.ordered if r.positive]

    @property
    def device_uid(self) -> str:
        return derived_uid("device", *series.model_key(self.model_info))

    def placement(self, family: str, content: Sequence[object], instance_number: int = 1) -> series.Placement:
        return series.placement(family, self.study_uid, self.model_info, content, instance_number)

    def save(self, prefix: str, dataset: Dataset) -> Path:
        """Stamp (creation date/time) and write ``dataset`` atomically as ``<prefix>_<SOPInstanceUID>.dcm``."""
        path = self.folder / object_file_name(prefix, str(dataset.SOPInstanceUID))
        return atomic_write_dataset(path, self.stamp.apply(dataset))
