"""Reading radiographs and CT the DICOM way: one call, float32 out, bone bright, one error type.

See docs/reading.md for the rules (LUT order, inversion, colour, multi-frame, series).
"""

from .api import read_image
from .dicom import group_series, read_dicom, read_dicom_series, scan_dicom_headers
from .dicom_pixels import MAX_DECODED_ELEMENTS, window_to_unit
from .errors import ImageReadError, ReadFailure

_MONAI_NAMES = ("FractureImageReader", "LoadFractureImage", "LoadFractureImaged")


def __getattr__(name: str) -> object:
    """The MONAI classes are imported on first use: importing MONAI takes seconds, and
    ``read_image`` users (CLI, scoring workers) should not pay for it."""
    if name in _MONAI_NAMES:
        from . import monai_reader

        return getattr(monai_reader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FractureImageReader",
    "ImageReadError",
    "LoadFractureImage",
    "LoadFractureImaged",
    "MAX_DECODED_ELEMENTS",
    "ReadFailure",
    "group_series",
    "read_dicom",
    "read_dicom_series",
    "read_image",
    "scan_dicom_headers",
    "window_to_unit",
]
