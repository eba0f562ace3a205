"""``read_image``: one entry point for every supported file, one error type out."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .dicom import guard, read_bytes, read_dicom, read_dicom_series
from .errors import ImageReadError, ReadFailure
from .nifti import read_nifti
from .raster import read_raster
from .sniff import detect_format, read_head

logger = logging.getLogger(__name__)


def read_image(path: str | Path | Sequence[str | Path]) -> tuple[np.ndarray, dict[str, Any]]:
    """Any supported input as (float32 array, metadata); only ImageReadError escapes.

    A list of paths or a folder is read as one DICOM series (a volume). The format is decided
    by content (DICOM with or without preamble, PNG, JPEG; NIfTI by header or ``.nii.gz``).
    """
    label = path if isinstance(path, (str, Path)) else (list(path)[0] if len(path) else "<no paths>")
    with guard(label):
        if not isinstance(path, (str, Path)):
            return read_dicom_series(path)
        if Path(path).is_dir():
            return read_dicom_series(path)
        head, size = read_head(path)
        fmt = detect_format(path, head, size)
        if fmt == "dicom":
            return read_dicom(path)
        if fmt == "nifti":
            return read_nifti(path)
        if fmt in ("png", "jpeg"):
            return read_raster(path, read_bytes(path), fmt)
        raise ImageReadError(path, ReadFailure.UNSUPPORTED_FORMAT, f"format {fmt!r}")
