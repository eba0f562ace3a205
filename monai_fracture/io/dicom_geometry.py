"""Ordering slices into a volume and checking that they really form one.

Used for a CT/MR series of single-frame files and for enhanced multi-frame files alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import ImageReadError, ReadFailure

#: Relative tolerance on slice gaps (a gap may differ from the median gap by this fraction).
GAP_TOLERANCE = 0.05
#: Absolute tolerances (mm, and direction-cosine units).
POSITION_EPSILON_MM = 0.01
ORIENTATION_EPSILON = 1e-3


@dataclass(frozen=True)
class StackGeometry:
    """Where each slice goes and how the volume sits in patient space (LPS, mm)."""

    order: list[int]  # input indices in the order of increasing position along the normal
    slice_spacing: float
    normal: np.ndarray
    affine: np.ndarray  # 4x4: voxel index (slice, row, column) -> LPS mm


def plane_affine(orientation: Sequence[float], position: Sequence[float], spacing: Sequence[float]) -> np.ndarray:
    """4x4 affine of one plane, index (row, column, [slice]) -> LPS; the third column is the normal."""
    row_dir = np.asarray(orientation[:3], dtype=np.float64)  # direction of increasing column index
    col_dir = np.asarray(orientation[3:], dtype=np.float64)  # direction of increasing row index
    affine = np.eye(4)
    affine[:3, 0] = col_dir * spacing[0]
    affine[:3, 1] = row_dir * spacing[1]
    affine[:3, 2] = np.cross(row_dir, col_dir)
    affine[:3, 3] = position
    return affine


def sort_stack(
    path: object,
    orientations: Sequence[Sequence[float] | None],
    positions: Sequence[Sequence[float] | None],
    pixel_spacings: Sequence[Sequence[float] | None],
    shapes: Sequence[tuple[int, ...]],
    labels: Sequence[str],
    single_slice_spacing: float | None = None,
) -> StackGeometry:
    """Sort slices along the normal (row x column cosines) and refuse anything that is not one volume."""
    n = len(positions)
    if n == 0:
        raise ImageReadError(path, ReadFailure.INCONSISTENT_SERIES, "no slices")
    for label, orientation, position in zip(labels, orientations, positions):
        if orientation is None or position is None:
            raise ImageReadError(path, ReadFailure.INCONSISTENT_SERIES, f"{label}: missing Image Position/Orientation (Patient)")
    if len(set(shapes)) > 1:
        raise ImageReadError(path, ReadFailure.INCONSISTENT_SERIES, f"mixed slice sizes {sorted(set(shapes))}")
    spacings = [s for s in pixel_spacings if s is not None]
    if len(spacings) != n:
        raise ImageReadError(path, ReadFailure.INCONSISTENT_SERIES, "a slice has no Pixel Spacing")
    if not np.allclose(spacings, spacings[0], rtol=1e-3, atol=1e-4):
        raise ImageReadError(path, ReadFailure.INCONSISTENT_SERIES, "mixed Pixel Spacing")
    iop = np.asarray(orientations, dtype=np.float64)
    if not np.allclose(iop, iop[0], atol=ORIENTATION_EPSILON):
        bad = int(np.argmax(np.abs(iop - iop[0]).max(axis=1)))
        raise ImageReadError(path, ReadFailure.INCONSISTENT_SERIES, f"mixed Image Orientation (Patient): {labels[bad]} differs from {labels[0]}")
    row_dir, col_dir = iop[0, :3], iop[0, 3:]
    normal = np.cross(row_dir, col_dir)
    norm = float(np.linalg.norm(normal))
    if not 0.9 < norm < 1.1 or abs(float(row_dir @ col_dir)) > 0.01:
        raise ImageReadError(path, ReadFailure.UNSUPPORTED_GEOMETRY, f"Image Orientation (Patient) {iop[0].tolist()} is not two orthonormal directions")
    normal = normal / norm
    ipp = np.asarray(positions, dtype=np.float64)
    distance = ipp @ normal
    order = [int(i) for i in np.argsort(distance, kind="stable")]
    affine = plane_affine(iop[0], ipp[order[0]], spacings[0])
    affine = affine[:, [2, 0, 1, 3]]  # index order (slice, row, column)
    if n == 1:
        spacing = float(single_slice_spacing) if single_slice_spacing and single_slice_spacing > 0 else 1.0
        affine[:3, 0] = normal * spacing
        return StackGeometry(order, spacing, normal, affine)
    gaps = np.diff(distance[order])
    dup = np.flatnonzero(gaps < POSITION_EPSILON_MM)
    if dup.size:
        i = int(dup[0])
        raise ImageReadError(path, ReadFailure.INCONSISTENT_SERIES, f"duplicate slice position: {labels[order[i]]} and {labels[order[i + 1]]} at {distance[order[i]]:.3f} mm")
    median = float(np.median(gaps))
    uneven = np.flatnonzero(np.abs(gaps - median) > GAP_TOLERANCE * median + POSITION_EPSILON_MM)
    if uneven.size:
        i = int(uneven[0])
        raise ImageReadError(
            path, ReadFailure.INCONSISTENT_SERIES,
            f"uneven slice gaps: {gaps[i]:.3f} mm between {labels[order[i]]} and {labels[order[i + 1]]}, median {median:.3f} mm (missing slice?)",
        )
    affine[:3, 0] = (ipp[order[-1]] - ipp[order[0]]) / (n - 1)
    return StackGeometry(order, float((distance[order[-1]] - distance[order[0]]) / (n - 1)), normal, affine)
