"""Per-study collection: a study is handed to its output writers once its last work item is scored.

Studies are keyed by (model family, StudyInstanceUID): a radiograph study and a CT study with the
same UID are reported by their own models. Only DICOM items with a study UID form studies (a PNG
has no study to file a report into).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from monai_fracture.reports.results import ImageResult
from monai_fracture.scoring.catalog import WorkItem

StudyKey = tuple[str, str]


@dataclass
class StudyScore:
    """A complete study, ready for the output writers: its decisions and the files they came from.

    ``key`` is (family, StudyInstanceUID); ``paths`` are the source files of ``results`` (their
    headers feed the SR, KOS and GSPS).
    """

    key: StudyKey
    results: list[ImageResult] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    @property
    def family(self) -> str:
        return self.key[0]

    @property
    def study_uid(self) -> str:
        return self.key[1]


def study_key(item: WorkItem) -> StudyKey | None:
    """(family, StudyInstanceUID) of a DICOM item, None for items that form no study."""
    return (item.family, item.study_uid) if item.is_dicom and item.study_uid else None


@dataclass
class _Open:
    pending: int = 0
    results: list[ImageResult] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    heatmaps: int = 0


class StudyCollector:
    """Counts each study's outstanding items; ``add`` returns the study when its last item arrives."""

    def __init__(self) -> None:
        self._studies: dict[StudyKey, _Open] = {}

    def expect(self, item: WorkItem) -> None:
        """One more item of its study is still to come (call for every item first, then ``add``)."""
        key = study_key(item)
        if key is not None:
            self._studies.setdefault(key, _Open()).pending += 1

    def add(self, item: WorkItem, result: ImageResult | None) -> StudyScore | None:
        """Record an item's result (None: failed); the study when this was its last item, with results."""
        key = study_key(item)
        if key is None:
            return None
        study = self._studies[key]
        study.pending -= 1
        if result is not None:
            study.results.append(result)
            study.paths.extend(item.paths)
        if study.pending > 0:
            return None
        done = StudyScore(key, list(study.results), list(study.paths))
        study.results.clear()
        study.paths.clear()
        return done if done.results else None

    def next_heatmap_number(self, item: WorkItem) -> int:
        """The Secondary Capture instance number of the study's next heatmap (1, 2, ... as they come)."""
        key = study_key(item)
        study = self._studies.setdefault(key, _Open()) if key is not None else _Open()
        study.heatmaps += 1
        return study.heatmaps
