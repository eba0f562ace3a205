"""What the reports are written from: one classifier decision and the model that made it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


def decide(probability: Any, threshold: float) -> Any:
    """The decision rule, the one place it is written: positive when ``probability >= threshold``
    (scikit-learn's ROC convention, as ``training.metrics``); works on a float or an array."""
    return probability >= threshold


@dataclass(frozen=True)
class EvidenceRegion:
    """The region of strongest evidence in source pixel coordinates (row, column; 0-based pixel centres).

    ``peak`` is the heatmap maximum; ``outline`` a closed convex polygon (first point repeated)
    around the connected area at or above ``level`` of the maximum that holds the peak;
    ``area_fraction`` that area's share of the image. Built by ``scoring.saliency.hot_region``.
    """

    peak: tuple[float, float]
    outline: tuple[tuple[float, float], ...]
    level: float
    area_fraction: float

    def to_dict(self) -> dict[str, Any]:
        return {"peak": list(self.peak), "outline": [list(p) for p in self.outline], "level": self.level,
                "area_fraction": self.area_fraction}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvidenceRegion:
        peak = tuple(float(v) for v in data["peak"])
        outline = tuple((float(r), float(c)) for r, c in data["outline"])
        return cls((peak[0], peak[1]), outline, float(data["level"]), float(data["area_fraction"]))

    def scoord_outline(self) -> np.ndarray:
        """The outline as DICOM (column, row) pairs: DICOM puts the centre of the first pixel at (0.5, 0.5)."""
        return np.array([(c + 0.5, r + 0.5) for r, c in self.outline], dtype=np.float32)

    def scoord_peak(self) -> np.ndarray:
        return np.array([[self.peak[1] + 0.5, self.peak[0] + 0.5]], dtype=np.float32)


@dataclass(frozen=True)
class ImageResult:
    """One decision: a radiograph (one SOP instance) or a CT series (all its slices).

    ``region`` is where the evidence is strongest (radiographs judged positive, when the model
    has gradients); the SR carries it as an image region and the GSPS draws it.
    """

    sop_uids: tuple[str, ...]
    probability: float
    threshold: float
    series_uid: str | None = None
    region: EvidenceRegion | None = None

    @property
    def positive(self) -> bool:
        return bool(decide(self.probability, self.threshold))

    def finding_text(self) -> str:
        """The decision in words, the way a radiologist reads it first."""
        return "Fracture suspected" if self.positive else "No fracture detected"

    def summary(self, model_info: ModelIdentity) -> str:
        """One labelled line: finding, probability, threshold and model, e.g. for a TEXT item or a PACS label."""
        return (f"{self.finding_text()} (probability {self.probability:.2f}, threshold {self.threshold:.2f}; "
                f"model {model_info.name} {model_info.version})")

    def content_key(self) -> tuple[Any, ...]:
        """What a report says about this decision that the model and image alone do not fix: the
        decision and the threshold. Probability and region are functions of model, image and code
        (all three in the UID, see ``reports.series``) up to float noise (batch position, thread
        count), and that noise must not turn a rerun or a resumed run into a "new" result.
        """
        return (tuple(self.sop_uids), self.positive, repr(float(self.threshold)))


@dataclass(frozen=True)
class Heatmap:
    """A Grad-CAM map and the image it explains, both in the source image's pixel geometry.

    ``image`` is the displayed image in [0, 1] (bone bright), ``cam`` the class activation in
    [0, 1]; both ``(rows, cols)`` in the orientation of the source ``pixel_array``.
    """

    sop_uid: str
    image: np.ndarray
    cam: np.ndarray
    probability: float = field(default=float("nan"))


class ModelIdentity(Protocol):
    """The parts of ``model_package.ModelInfo`` the reports use (duck-typed)."""

    name: str
    version: str


@dataclass(frozen=True)
class AlgorithmIdentity:
    """Name and version of a model: a small, picklable stand-in for ``ModelInfo`` (report workers)."""

    name: str
    version: str

    @classmethod
    def of(cls, model_info: ModelIdentity) -> AlgorithmIdentity:
        return cls(str(model_info.name), str(model_info.version))
