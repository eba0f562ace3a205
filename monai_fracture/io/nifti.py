"""NIfTI through nibabel: values as stored (scl_slope applied), in nibabel's index order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .meta import empty_meta
from .dicom_pixels import MAX_DECODED_ELEMENTS
from .errors import ImageReadError, ReadFailure


def read_nifti(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """(i, j[, k]) float32 array; trailing singleton axes beyond the second are dropped."""
    import nibabel as nib

    try:
        image = nib.load(str(path))
        shape = tuple(int(s) for s in image.shape)
        if len(shape) < 2 or any(s <= 0 for s in shape) or int(np.prod(shape, dtype=np.int64)) > MAX_DECODED_ELEMENTS:
            raise ImageReadError(path, ReadFailure.UNSUPPORTED_GEOMETRY, f"shape {shape}")
        keep = len(shape)
        while keep > 2 and shape[keep - 1] == 1:
            keep -= 1
        if keep > 3:
            raise ImageReadError(path, ReadFailure.UNSUPPORTED_GEOMETRY, f"{keep}-D image {shape}: one 2-D or 3-D image expected")
        values = np.asarray(image.get_fdata(dtype=np.float32)).reshape(shape[:keep])
        zooms = tuple(float(z) for z in image.header.get_zooms()[:keep])
        affine = np.asarray(image.affine, dtype=np.float64)
    except ImageReadError:
        raise
    except MemoryError:
        raise
    except EOFError as exc:
        raise ImageReadError(path, ReadFailure.TRUNCATED, f"EOFError: {exc}") from None
    except Exception as exc:  # ImageFileError, ValueError, zlib.error, OSError ...
        text = f"{type(exc).__name__}: {exc}"
        reason = ReadFailure.TRUNCATED if "truncat" in text.lower() or "end of" in text.lower() else ReadFailure.UNDECODABLE
        raise ImageReadError(path, reason, text[:400]) from None
    if not np.isfinite(values).all():
        raise ImageReadError(path, ReadFailure.INVALID_VALUE, "non-finite voxel values")
    meta = empty_meta(path, "nifti")
    meta.update(spacing=zooms, num_frames=1, affine=affine, space="RAS", presentation_ready=False)
    return values, meta
