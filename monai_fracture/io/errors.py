"""The one error type for inputs that cannot be used, with a machine-readable reason."""

from __future__ import annotations

from enum import Enum
from os import PathLike


class ReadFailure(str, Enum):
    """Why an input cannot be used; the value is what results.csv shows in ``reason``."""

    NOT_FOUND = "not_found"
    NOT_REGULAR_FILE = "not_regular_file"  # a FIFO, socket or device: never opened (it could block)
    NOT_DICOM = "not_dicom"
    NOT_AN_IMAGE = "not_an_image"  # SR, RTSTRUCT, RTPLAN, PR, KOS, DICOMDIR, waveforms ...
    NO_PIXEL_DATA = "no_pixel_data"
    UNDECODABLE = "undecodable"  # no decoder for the transfer syntax, or the decoder failed
    TRUNCATED = "truncated"  # pixel data shorter than its header promises
    UNSUPPORTED_GEOMETRY = "unsupported_geometry"  # e.g. zero rows, 4D, mismatched frame sizes
    INCONSISTENT_SERIES = "inconsistent_series"  # slices that do not form one volume
    UNSUPPORTED_FORMAT = "unsupported_format"  # a file type we do not read at all
    INVALID_VALUE = "invalid_value"  # a tag value that makes the image meaningless
    NO_CONTENT = "no_content"  # non-finite or (nearly) constant pixels: nothing to classify
    OVER_MEMORY_BUDGET = "over_memory_budget"  # decoding would allocate more than the per-image budget


class ImageReadError(Exception):
    """An input file that cannot be turned into an image, naming the file and the reason."""

    def __init__(self, path: str | PathLike | None, reason: ReadFailure, detail: str = "") -> None:
        self.path = str(path) if path is not None else "<memory>"
        self.reason = ReadFailure(reason)
        self.detail = detail
        super().__init__(f"{self.path}: {self.reason.value}" + (f": {detail}" if detail else ""))

    def __reduce__(self):  # keep the fields when crossing DataLoader worker processes
        return (type(self), (self.path, self.reason, self.detail))
