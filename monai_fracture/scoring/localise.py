"""Evidence for positive radiographs while scoring: their heatmaps, hot regions and overlay images.

Kept beside the runner so the run loop only asks "where is the evidence?"; the SR region, the
GSPS and the SC all come from this one heatmap. The positives of a batch share one heatmap pass
(``Classifier.iter_heatmaps``), and an image whose network input the classification batch already
had is not read again (only the SC overlay needs the source pixels).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from monai_fracture.io.meta import PRESENTATION_READY
from monai_fracture.reports import EvidenceRegion, Heatmap
from monai_fracture.model.classifier import CamInput, Classifier
from monai_fracture.model.gradcam import hot_region

#: Share of the heatmap maximum that outlines the region drawn in the SR and the GSPS.
REGION_LEVEL = 0.5


@dataclass(frozen=True)
class Request:
    """One positive radiograph to localise: ``cam_input`` is its network input when the caller kept it."""

    path: str
    sop_uid: str
    probability: float
    cam_input: CamInput | None = None


def display_image(array: np.ndarray, meta: Mapping[str, Any]) -> np.ndarray:
    """The image as a viewer would show it, in [0, 1], for the heatmap overlay."""
    image = np.nan_to_num(np.asarray(array, dtype=np.float32))
    if image.ndim == 3:  # a volume: the middle slice
        image = image[image.shape[0] // 2]
    if meta.get(PRESENTATION_READY):
        return np.clip(image, 0.0, 1.0)
    low, high = np.percentile(image, [1.0, 99.0])
    return np.clip((image - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(image)


def localise(classifier: Classifier, path: str, sop_uid: str, probability: float,
             with_heatmap: bool) -> tuple[EvidenceRegion, Heatmap | None]:
    """Read ``path``, compute its heatmap and hot region; the ``Heatmap`` only when an SC is wanted."""
    outcome = next(localise_many(classifier, [Request(path, sop_uid, probability)], with_heatmap))
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def localise_many(classifier: Classifier, requests: Sequence[Request],
                  with_heatmap: bool) -> Iterator[tuple[EvidenceRegion, Heatmap | None] | Exception]:
    """(region, heatmap or None) per request, in order, or the exception that cost that request its region.

    A kept ``cam_input`` is used only when the heatmap sees the classification input
    (``Classifier.heatmap_reuses_input``); other requests are read again. The maps of all requests
    come from one heatmap pass per batch, then one full-size map at a time.
    """
    from monai_fracture.io import read_image

    inputs: list[CamInput | Exception] = []
    for request in requests:
        if request.cam_input is not None and classifier.heatmap_reuses_input:
            inputs.append(request.cam_input)
            continue
        try:  # only the small network input outlives this read
            inputs.append(classifier.heatmap_input(*read_image(request.path)))
        except Exception as err:  # this request loses its region, the others do not
            inputs.append(err)
    maps = classifier.iter_heatmaps([i for i in inputs if not isinstance(i, Exception)])
    failure: Exception | None = None
    for request, cam_input in zip(requests, inputs):
        outcome: tuple[EvidenceRegion, Heatmap | None] | Exception
        if isinstance(cam_input, Exception):
            outcome = cam_input
        elif failure is not None:
            outcome = failure
        else:
            try:
                cam = next(maps)
            except Exception as err:  # a failed heatmap pass costs the rest of its batch their regions
                cam, failure = None, err
            try:
                outcome = failure if cam is None else _evidence(request, cam, with_heatmap)
            except Exception as err:
                outcome = err
        yield outcome


def _evidence(request: Request, cam: np.ndarray, with_heatmap: bool) -> tuple[EvidenceRegion, Heatmap | None]:
    region = hot_region(cam, level=REGION_LEVEL)
    if not with_heatmap:
        return region, None
    from monai_fracture.io import read_image

    array, meta = read_image(request.path)  # the overlay needs the source pixels, which nothing kept
    return region, Heatmap(request.sop_uid, display_image(array, meta), cam, request.probability)
