"""The metadata every reader returns: its key names and their types, owned here, used everywhere.

Readers fill :func:`empty_meta`; ``FractureImageReader`` hands the same keys to MONAI (in the
``MetaTensor``'s ``meta``); transforms and reports read them by these names, never by string copies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FILENAME = "filename"
MODALITY = "modality"
#: True when io applied the file's own display step (DICOM VOI LUT / window, or a PNG/JPEG's 8 bits):
#: the values are then in [0, 1] and need no percentile window; a 16-bit PNG is not. Always a ``bool``.
PRESENTATION_READY = "presentation_ready"
#: True when io flipped MONOCHROME1 (or an inverse LUT) so bone is bright. Always a ``bool``.
INVERTED = "inverted"

#: Keys whose value is always a ``bool`` (never None, never a string), in MONAI metadata too.
FLAG_KEYS = (PRESENTATION_READY, INVERTED)

#: Metadata keys every reader returns (``None`` when unknown); see docs/architecture.md.
META_KEYS = (
    FILENAME, "format", "study_uid", "series_uid", "sop_uid", "sop_class_uid", "patient_id",
    "accession_number", MODALITY, "body_part", "view_position", "laterality", "spacing",
    "photometric", "bits_stored", "window", PRESENTATION_READY, INVERTED, "frame_rule",
    "num_frames",
)

#: Further keys, also always present (None when not applicable): how values and geometry were found.
EXTRA_KEYS = (
    "spacing_source",  # PixelSpacing / ImagerPixelSpacing / ... : the tag the spacing came from
    "transfer_syntax",  # DICOM transfer syntax UID
    "image_orientation", "image_position",  # Image Orientation/Position (Patient), first slice
    "instance_number", "frame_of_reference_uid", "slice_thickness",
    "voi",  # LINEAR / LINEAR_EXACT / SIGMOID / VOILUTSequence: the VOI step applied
    "window_ignored",  # (center, width) of a window not applied because it misses the data
    "value_range",  # (low, high) of the returned values' nominal range
    "affine", "space",  # 4x4 index -> patient mm, and "LPS"/"RAS" (None: no patient geometry)
    "sop_uids", "filenames",  # series: per slice, in volume order
)


def empty_meta(path: str | Path | None, fmt: str) -> dict[str, Any]:
    """The metadata dict with every contract key (and every extra key) present."""
    meta: dict[str, Any] = dict.fromkeys(META_KEYS + EXTRA_KEYS)
    meta.update({FILENAME: str(path) if path is not None else None, "format": fmt,
                 PRESENTATION_READY: False, INVERTED: False, "num_frames": 1})
    return meta


__all__ = ["EXTRA_KEYS", "FILENAME", "FLAG_KEYS", "INVERTED", "META_KEYS", "MODALITY", "PRESENTATION_READY", "empty_meta"]
