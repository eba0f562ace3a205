"""Is there anything to classify? Non-finite or (nearly) constant pixels are refused, not scored.

A network scores any tensor: an all-NaN float image, a blank PNG or a NIfTI of zeros came out
at P = 0.23, positive at the shipped threshold. The rule (docs/reading.md, "Usable content"):

- every value must be finite;
- the image must not be (nearly) constant: on an evenly strided sample of at most
  ``SAMPLE_SIZE`` values, the 1st and 99th percentiles must differ, i.e. no single value
  covers 98% or more of the image. Real radiographs and CT, even heavily collimated ones,
  stay far from that.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ImageReadError, ReadFailure

SAMPLE_SIZE = 1 << 16
LOW_PERCENTILE, HIGH_PERCENTILE = 1.0, 99.0


def check_usable_content(values: np.ndarray, path: Any) -> None:
    """Raise NO_CONTENT for an image that carries nothing a model could read."""
    if values.size == 0:
        raise ImageReadError(path, ReadFailure.NO_CONTENT, "empty image")
    if not np.isfinite(values).all():
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        raise ImageReadError(path, ReadFailure.NO_CONTENT, f"{bad} of {values.size} values are not finite (NaN or infinity)")
    flat = values.reshape(-1)
    sample = flat[:: max(1, flat.size // SAMPLE_SIZE)]
    low, high = np.percentile(sample, [LOW_PERCENTILE, HIGH_PERCENTILE])
    if not high > low:
        what = "constant" if float(flat.min()) == float(flat.max()) else "nearly constant (98% or more of one value)"
        raise ImageReadError(path, ReadFailure.NO_CONTENT, f"{what} image, value {float(np.median(sample)):g}")
