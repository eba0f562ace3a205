"""``FractureImageReader``: our reading rules behind MONAI's ``ImageReader`` interface.

``LoadImage(reader=FractureImageReader())`` and ``{"_target_": "monai_fracture.io.FractureImageReader"}``
in bundle JSON both work. Arrays keep pydicom's ``pixel_array`` orientation: (rows, cols) for 2-D,
(slices, rows, cols) for a series; the affine maps that index order to patient space.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import DtypeLike, KeysCollection
from monai.data.image_reader import ImageReader
from monai.transforms import LoadImage, LoadImaged
from monai.utils import MetaKeys, SpaceKeys, TraceKeys, ensure_tuple
from monai.utils.enums import PostFix

from .api import read_image
from .meta import EXTRA_KEYS, FLAG_KEYS, META_KEYS
from .sniff import has_image_suffix, is_dicom_file

DEFAULT_POST_FIX = PostFix.meta()
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


#: Our keys with fixed-length numeric values: NaN-filled when unknown, so that batches collate.
_VECTOR_KEYS = {"window": 2, "window_ignored": 2, "value_range": 2, "image_orientation": 6, "image_position": 3}
_NUMBER_KEYS = ("bits_stored", "num_frames", "instance_number", "slice_thickness")
_TEXT_LIST_KEYS = ("sop_uids", "filenames")


def collatable(ours: dict[str, Any]) -> dict[str, Any]:
    """Our metadata in a form every item of a batch shares: same keys, same types per key.

    Unknown text becomes ``"none"`` (as in MONAI's readers), unknown numbers NaN, tuples fixed-length
    float arrays, per-slice lists one backslash-joined string (the DICOM multi-value separator).
    The :data:`~monai_fracture.io.meta.FLAG_KEYS` stay ``bool`` (they collate to a bool tensor).
    """
    meta: dict[str, Any] = {}
    for key in META_KEYS + EXTRA_KEYS:
        value = ours.get(key)
        if key in ("affine", "space", "spacing"):
            continue  # MONAI's own keys, set by get_data
        if key in _VECTOR_KEYS:
            meta[key] = np.full(_VECTOR_KEYS[key], np.nan) if value is None else np.asarray(value, dtype=np.float64)
        elif key in _NUMBER_KEYS:
            meta[key] = float("nan") if value is None else float(value)
        elif key in _TEXT_LIST_KEYS:
            meta[key] = "\\".join(str(v) for v in value) if value else str(TraceKeys.NONE)
        elif key in FLAG_KEYS:
            meta[key] = bool(value)
        else:
            meta[key] = str(TraceKeys.NONE) if value is None else str(value)
    return meta


class FractureImageReader(ImageReader):
    """Read DICOM (file, list of slices or folder of one series), NIfTI, PNG and JPEG.

    Args:
        affine_lps_to_ras: convert DICOM's LPS patient coordinates to RAS in ``affine`` (as MONAI's
            own DICOM readers do by default).
    """

    def __init__(self, affine_lps_to_ras: bool = True) -> None:
        super().__init__()
        self.affine_lps_to_ras = affine_lps_to_ras

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        """Known suffixes, folders, and files of any other name whose content is DICOM."""
        for name in ensure_tuple(filename):
            path = Path(name)
            if has_image_suffix(path) or path.is_dir():
                continue
            if not is_dicom_file(path):
                return False
        return True

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """Decode now (pixels are decoded exactly once); returns the (array, metadata) pair."""
        if isinstance(data, (str, Path)):
            return read_image(data)
        paths = list(data)
        return read_image(paths[0] if len(paths) == 1 else paths)

    def get_data(self, img: tuple[np.ndarray, dict[str, Any]]) -> tuple[np.ndarray, dict[str, Any]]:
        """Array plus MONAI metadata (affine, spacing, spatial_shape, no channel) and our keys."""
        array, ours = img
        meta = collatable(ours)
        affine = np.asarray(ours.get("affine") if ours.get("affine") is not None else np.eye(4), dtype=np.float64)
        space = ours.get("space")
        if space == "LPS" and self.affine_lps_to_ras:
            affine, space = _LPS_TO_RAS @ affine, "RAS"
        spacing = ours.get("spacing") or (1.0,) * array.ndim
        meta[MetaKeys.ORIGINAL_AFFINE] = affine
        meta[MetaKeys.AFFINE] = affine.copy()
        meta[MetaKeys.SPACE] = SpaceKeys.RAS if space in ("RAS", None) else SpaceKeys.LPS
        meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(array.shape)
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = "no_channel"
        meta["spacing"] = np.asarray(spacing, dtype=np.float64)
        meta["filename_or_obj"] = ours.get("filename")
        return array, meta


class LoadFractureImage(LoadImage):
    """``LoadImage`` with one reader (``FractureImageReader`` unless ``reader`` is given), errors unmasked.

    Plain ``LoadImage`` tries every registered reader in turn and, when all fail, raises a generic
    ``RuntimeError`` with the tracebacks as text: our ``ImageReadError`` (and its reason code, which
    results.csv reports) would be lost, and a file ours refuses (a SEG object, an inconsistent series)
    could be read by ``PydicomReader`` with other conventions. Passing the one reader at call time
    makes ``LoadImage`` use it only and lets its exception propagate. ``reader`` takes what
    ``LoadImage`` takes (an ``ImageReader`` instance, class or name); ``affine_lps_to_ras`` applies
    to our reader only.
    """

    def __init__(
        self,
        reader: ImageReader | type[ImageReader] | str | None = None,
        image_only: bool = True,
        dtype: DtypeLike | None = np.float32,
        ensure_channel_first: bool = False,
        simple_keys: bool = False,
        prune_meta_pattern: str | None = None,
        prune_meta_sep: str = ".",
        expanduser: bool = True,
        affine_lps_to_ras: bool = True,
    ) -> None:
        if reader is None:
            reader = FractureImageReader(affine_lps_to_ras=affine_lps_to_ras)
        super().__init__(reader, image_only, dtype, ensure_channel_first, simple_keys, prune_meta_pattern, prune_meta_sep, expanduser)
        self.reader = self.readers[-1]  # the instance LoadImage built or registered last

    def __call__(self, filename: Sequence[str | Path] | str | Path, reader: ImageReader | None = None):
        return super().__call__(filename, reader if reader is not None else self.reader)


class LoadFractureImaged(LoadImaged):
    """Dictionary twin of ``LoadFractureImage`` (bundle: ``monai_fracture.io.LoadFractureImaged``).

    A failure surfaces as MONAI's "applying transform" ``RuntimeError`` whose ``__cause__`` is the
    reader's own exception (``monai_fracture.io.ImageReadError`` for our reader).
    """

    def __init__(
        self,
        keys: KeysCollection,
        reader: ImageReader | type[ImageReader] | str | None = None,
        dtype: DtypeLike | None = np.float32,
        meta_keys: KeysCollection | None = None,
        meta_key_postfix: str = DEFAULT_POST_FIX,
        overwriting: bool = False,
        image_only: bool = True,
        ensure_channel_first: bool = False,
        simple_keys: bool = False,
        prune_meta_pattern: str | None = None,
        prune_meta_sep: str = ".",
        allow_missing_keys: bool = False,
        expanduser: bool = True,
        affine_lps_to_ras: bool = True,
    ) -> None:
        super().__init__(
            keys, None, dtype, meta_keys, meta_key_postfix, overwriting, image_only, ensure_channel_first,
            simple_keys, prune_meta_pattern, prune_meta_sep, allow_missing_keys, expanduser,
        )
        self._loader = LoadFractureImage(
            reader, image_only, dtype, ensure_channel_first, simple_keys, prune_meta_pattern, prune_meta_sep, expanduser, affine_lps_to_ras
        )
        self.reader = self._loader.reader
