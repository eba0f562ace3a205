"""Evidence for one positive radiograph while scoring: its Grad-CAM, the hot region, the overlay image.

Kept beside the runner so the run loop only asks "where is the evidence?"; the SR region, the
GSPS and the SC all come from this one heatmap.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from monai_fracture.io.meta import PRESENTATION_READY
from monai_fracture.reports import EvidenceRegion, Heatmap
from monai_fracture.model.classifier import Classifier
from monai_fracture.model.gradcam import hot_region

#: Share of the heatmap maximum that outlines the region drawn in the SR and the GSPS.
REGION_LEVEL = 0.5


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
    """Read ``path`` again, compute its Grad-CAM and hot region; the ``Heatmap`` only when an SC is wanted."""
    from monai_fracture.io import read_image

    array, meta = read_image(path)
    cam = classifier.heatmap(array, meta)
    region = hot_region(cam, level=REGION_LEVEL)
    heatmap = Heatmap(sop_uid, display_image(array, meta), cam, probability) if with_heatmap else None
    return region, heatmap
