"""PNG and JPEG through Pillow: EXIF orientation applied, grey, scaled to [0, 1] by bit depth.

Truncated files must raise TRUNCATED even if some other code set
``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True``: the stream structure is checked first
(a JPEG needs an EOI marker after its last scan, a PNG an IEND chunk after its last IDAT).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .dicom_pixels import MAX_DECODED_ELEMENTS
from .errors import ImageReadError, ReadFailure
from .meta import empty_meta

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def check_complete(data: bytes, fmt: str, path: object) -> None:
    """Raise TRUNCATED when the stream stops before its end marker."""
    if fmt == "jpeg":
        last_scan = data.rfind(b"\xff\xda")
        if last_scan < 0 or data.find(b"\xff\xd9", last_scan) < 0:
            raise ImageReadError(path, ReadFailure.TRUNCATED, "JPEG stream has no end-of-image marker after its last scan")
    elif fmt == "png":
        last_data = data.rfind(b"IDAT")
        if last_data < 0 or data.find(b"IEND", last_data) < 0:
            raise ImageReadError(path, ReadFailure.TRUNCATED, "PNG stream has no IEND chunk after its image data")


def read_raster(path: str | Path, data: bytes, fmt: str) -> tuple[np.ndarray, dict[str, Any]]:
    """A PNG/JPEG as a (rows, cols) float32 array in [0, 1] (16-bit grey PNG: divided by 65535).

    An 8-bit image is taken as displayed (``presentation_ready``: only clipped downstream). A
    16-bit or 32-bit grey image is not: such files usually hold detector values in 10-14 bits
    (a 12-bit radiograph stored in 16 bits spans 0-0.06 after the division), so the preprocessing
    windows it on its own percentiles, like a DICOM image without a VOI window.
    """
    check_complete(data, fmt, path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width <= 0 or height <= 0 or width * height > MAX_DECODED_ELEMENTS:
                    raise ImageReadError(path, ReadFailure.UNSUPPORTED_GEOMETRY, f"{width} x {height} pixels")
                image.load()
                oriented = ImageOps.exif_transpose(image)
                values, bits = _grey(oriented, path)
    except ImageReadError:
        raise
    except MemoryError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(path, ReadFailure.UNSUPPORTED_GEOMETRY, str(exc)) from None
    except Exception as exc:  # UnidentifiedImageError, OSError, SyntaxError, struct.error ...
        text = f"{type(exc).__name__}: {exc}"
        reason = ReadFailure.TRUNCATED if "truncated" in text.lower() else ReadFailure.UNDECODABLE
        raise ImageReadError(path, reason, text[:400]) from None
    meta = empty_meta(path, fmt)
    meta.update(
        presentation_ready=bits <= 8, bits_stored=bits, photometric="MONOCHROME2", frame_rule=None, num_frames=1,
        affine=np.eye(4), space=None, value_range=(0.0, 1.0),
    )
    return values, meta


def _scaled(values: np.ndarray, scale: float) -> np.ndarray:
    """``values * scale`` in place: the float32 conversion already made the one copy needed."""
    values *= np.float32(scale)
    return values


def _grey(image: Image.Image, path: object) -> tuple[np.ndarray, int]:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image).astype(np.float32)
        if mode == "I" and values.size and float(values.max()) > 65535:
            raise ImageReadError(path, ReadFailure.INVALID_VALUE, "32-bit integer image values above 65535")
        return _scaled(values, 1 / 65535), 16
    if mode == "F":
        return np.array(image, dtype=np.float32), 32
    if mode == "1":
        return _scaled(np.array(image.convert("L"), dtype=np.float32), 1 / 255), 1
    if mode in ("L", "LA"):
        return _scaled(np.array(image if mode == "L" else image.getchannel("L"), dtype=np.float32), 1 / 255), 8
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    return _scaled(rgb @ _LUMA, 1 / 255), 8
