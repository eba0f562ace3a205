"""CT phantoms in Hounsfield units: a limb with a long bone, or a chest wall with ribs.

Vectorised over the voxel grid (slices, rows, cols). Tissues use textbook HU: air -1000,
fat -100, soft tissue ~40, marrow ~300, cortical bone 1000-1800. A fracture is a gap across
the bone (filled with haematoma ~50 HU) plus a step: the far fragment is shifted sideways.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

CT_ANATOMIES = ("long_bone", "ribs")
HU_AIR, HU_FAT, HU_SOFT, HU_MARROW, HU_HAEMATOMA = -1000.0, -100.0, 40.0, 300.0, 55.0


@dataclass
class CTFracture:
    """Ground truth of a CT fracture: slice index and voxel position of its centre."""

    kind: str
    bone: str
    position: float  # fractional position along the bone (long bone) or the arc (rib)
    gap_mm: float
    step_mm: float
    slice: int
    row: int
    col: int


@dataclass
class CTPhantom:
    volume: np.ndarray  # float32 HU, (slices, rows, cols)
    anatomy: str
    fracture: CTFracture | None
    spacing: tuple[float, float, float]  # (slice, row, col) mm


def _body(zz, yy, xx, a, b, cy, cx) -> np.ndarray:
    """Elliptic soft-tissue body with a fat layer, air outside."""
    rho = np.sqrt(((yy - cy) / b) ** 2 + ((xx - cx) / a) ** 2)
    hu = np.where(rho <= 1.0, HU_SOFT, HU_AIR)
    hu = np.where((rho > 0.88) & (rho <= 1.0), HU_FAT, hu)
    return hu.astype(np.float32)


def simulate_long_bone_ct(shape, spacing, rng: np.random.Generator, fractured: bool) -> CTPhantom:
    """A limb section along z with a slightly tilted tubular bone."""
    zz, yy, xx = (g * s for g, s in zip(np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]].astype(np.float32), spacing))
    depth, height, width = (n * s for n, s in zip(shape, spacing))
    cy, cx = height / 2 + rng.normal(0, 0.04) * height, width / 2 + rng.normal(0, 0.04) * width
    hu = _body(zz, yy, xx, width * rng.uniform(0.36, 0.45), height * rng.uniform(0.33, 0.43), height / 2, width / 2)
    tilt_y, tilt_x = rng.normal(0, 0.05, size=2)
    radius = min(height, width) * rng.uniform(0.12, 0.17)
    canal = radius * rng.uniform(0.5, 0.62)
    cortical = rng.uniform(1100.0, 1700.0)
    # the axis passes (cy, cx) at mid depth; distance of every voxel to the axis, per slice
    dz = zz - depth / 2
    ay, ax = cy + tilt_y * dz, cx + tilt_x * dz
    fracture = None
    if fractured:
        pos = rng.uniform(0.3, 0.7)
        z0 = pos * depth
        gap = rng.uniform(2.5, 5.0)  # mm
        step = radius * rng.uniform(0.35, 0.8)
        direction = rng.uniform(0, 2 * math.pi)
        obliq = rng.normal(0, 0.3)
        plane = zz - z0 - obliq * (xx - ax)
        far = plane > 0
        ay = ay + far * step * math.sin(direction)
        ax = ax + far * step * math.cos(direction)
        k = int(round(z0 / spacing[0]))
        fracture = CTFracture(
            "displaced" if step > radius * 0.5 else "transverse", "long_bone", float(pos), float(gap), float(step),
            k, int(round(cy / spacing[1])), int(round(cx / spacing[2])),
        )
    dist = np.sqrt((yy - ay) ** 2 + (xx - ax) ** 2)
    bone = np.where(dist <= canal, HU_MARROW, np.where(dist <= radius, cortical, np.nan))
    if fractured:
        bone = np.where(np.abs(plane) < gap / 2, np.where(dist <= radius * 1.1, HU_HAEMATOMA, np.nan), bone)
    hu = np.where(np.isnan(bone), hu, bone).astype(np.float32)
    return CTPhantom(hu, "long_bone", fracture, spacing)


def simulate_ribs_ct(shape, spacing, rng: np.random.Generator, fractured: bool) -> CTPhantom:
    """A chest-wall section: 2-3 ribs as curved tubes along an elliptic body outline."""
    zz, yy, xx = (g * s for g, s in zip(np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]].astype(np.float32), spacing))
    depth, height, width = (n * s for n, s in zip(shape, spacing))
    a, b = width * rng.uniform(0.38, 0.44), height * rng.uniform(0.34, 0.42)
    cy, cx = height / 2, width / 2
    hu = _body(zz, yy, xx, a, b, cy, cx)
    # lungs: air-like inside the rib cage
    rho = np.sqrt(((yy - cy) / (b * 0.78)) ** 2 + ((xx - cx) / (a * 0.78)) ** 2)
    hu = np.where(rho < 1.0, -850.0, hu).astype(np.float32)
    theta = np.arctan2((yy - cy) / b, (xx - cx) / a)
    radial = (np.sqrt(((yy - cy) / b) ** 2 + ((xx - cx) / a) ** 2) - 0.86) * (a + b) / 2
    n_ribs = int(rng.integers(2, 4))
    spacing_z = depth / (n_ribs + 0.5)
    slope = rng.uniform(2.0, 5.0)  # mm of z per radian of arc: ribs run obliquely
    rib_r = min(height, width) * rng.uniform(0.035, 0.05)
    broken = int(rng.integers(n_ribs)) if fractured else -1
    fracture = None
    for k in range(n_ribs):
        z_k = spacing_z * (k + 0.75) + rng.normal(0, 1.0)
        centre_z = z_k + slope * theta
        if k == broken:
            theta0 = rng.uniform(-2.2, 2.2)
            gap_rad = rng.uniform(2.5, 4.5) / ((a + b) / 2)
            step = rib_r * rng.uniform(0.8, 1.6) * rng.choice([-1, 1])
            centre_z = centre_z + (theta > theta0) * step
        dz = zz - centre_z
        d = np.sqrt(radial**2 + (dz / 1.4) ** 2)  # flattened cross-section
        rib = np.where(d <= rib_r * 0.5, HU_MARROW, np.where(d <= rib_r, rng.uniform(1000.0, 1500.0), np.nan))
        if k == broken:
            rib = np.where(np.abs(theta - theta0) < gap_rad / 2, np.nan, rib)
            z_f = z_k + slope * theta0
            row = cy + b * 0.86 * math.sin(theta0)
            col = cx + a * 0.86 * math.cos(theta0)
            fracture = CTFracture(
                "displaced", f"rib{k + 1}", float((theta0 + math.pi) / (2 * math.pi)),
                float(gap_rad * (a + b) / 2), float(abs(step)),
                int(np.clip(round(z_f / spacing[0]), 0, shape[0] - 1)), int(round(row / spacing[1])), int(round(col / spacing[2])),
            )
        hu = np.where(np.isnan(rib), hu, rib).astype(np.float32)
    return CTPhantom(hu, "ribs", fracture, spacing)


def simulate_ct(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], rng: np.random.Generator, anatomy: str, fractured: bool
) -> CTPhantom:
    """Simulate one CT series; adds partial-volume blur and scanner noise (~10-25 HU)."""
    make = simulate_long_bone_ct if anatomy == "long_bone" else simulate_ribs_ct
    phantom = make(shape, spacing, rng, fractured)
    vol = ndimage.gaussian_filter(phantom.volume, (0.6, 0.5, 0.5))
    vol = vol + rng.normal(0.0, rng.uniform(10.0, 25.0), size=vol.shape).astype(np.float32)
    phantom.volume = np.clip(vol, -1024.0, 3000.0).astype(np.float32)
    return phantom
