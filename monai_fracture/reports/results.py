"""What the reports are written from: one classifier decision and the model that made it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class ImageResult:
    """One decision: a radiograph (one SOP instance) or a CT series (all its slices)."""

    sop_uids: tuple[str, ...]
    probability: float
    threshold: float
    series_uid: str | None = None

    @property
    def positive(self) -> bool:
        return self.probability >= self.threshold


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
