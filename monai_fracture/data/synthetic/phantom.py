"""Radiograph phantoms: bones as attenuating tubes, projected the way an X-ray detector sees them.

Everything is vectorised numpy over the pixel grid. A bone is a tube in its own frame
(``u`` along the shaft, ``v`` across it): the path length through a cylinder of radius ``R`` at
distance ``v`` from its axis is ``2*sqrt(R**2 - v**2)``, so a cortical shell is the chord of the
outer radius minus the chord of the medullary canal. A fracture cuts the tube along a line
``u - v*tan(phi) = u0``; the distal fragment is drawn in its own displaced/angulated frame, so a
gap, a step in the cortex, overlap (impaction) and angulation all come out of the same geometry.

The label lives only in the bone: pose, size, exposure, noise, collimation and markers are drawn
from the same distributions for fractured and clean images, so global statistics cannot tell
the classes apart (see ``tests/test_data_demo.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

FRACTURE_TYPES = ("transverse", "oblique", "comminuted", "displaced", "hairline")
# hairline fractures are hard on purpose; they stay a small share of the positives
FRACTURE_WEIGHTS = (0.25, 0.24, 0.16, 0.25, 0.10)
ANATOMIES = ("femur", "forearm", "leg", "hand")
ANATOMY_WEIGHTS = (0.3, 0.25, 0.25, 0.2)

# linear attenuation per pixel of path, in "log units per pixel" (relative, tuned for contrast)
MU_CORTEX = 0.030
MU_MARROW = 0.006
MU_CANCELLOUS = 0.012
MU_SOFT = 0.0035
MU_LEAD = 6.0  # total attenuation of a lead marker letter


@dataclass
class Bone:
    """A tubular bone in image pixels: centre, axis angle (rad), half length, outer radius."""

    name: str
    cx: float
    cy: float
    angle: float
    half_length: float
    radius: float
    canal_ratio: float = 0.55
    flare: float = 0.6  # how much wider the ends are than the shaft
    end_cap: float = 0.25  # fraction of the half length taken by the rounded epiphysis


@dataclass
class Fracture:
    """Where and how a bone is broken (all lengths in pixels, angles in radians)."""

    kind: str
    bone: str
    position: float  # fractional position along the bone, 0 = proximal end, 1 = distal end
    line_angle: float  # obliquity of the fracture line relative to the shaft's normal
    gap: float
    shift_along: float
    shift_across: float
    angulation: float
    fragments: list[tuple[float, float, float, float]] = field(default_factory=list)  # (du, dv, r, rot)
    row: float = 0.0  # pixel coordinates of the fracture centre (filled when rendered)
    col: float = 0.0


def _chord(radius: np.ndarray | float, dist: np.ndarray) -> np.ndarray:
    """Path length through a circle of ``radius`` at ``dist`` from its centre (0 outside)."""
    r2 = np.square(radius) - np.square(dist)
    return 2.0 * np.sqrt(np.maximum(r2, 0.0))


def _bone_frame(bone: Bone, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(bone.angle), math.sin(bone.angle)
    dx, dy = xx - bone.cx, yy - bone.cy
    return dx * c + dy * s, -dx * s + dy * c


def _tube_attenuation(bone: Bone, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Attenuation of one intact bone evaluated at bone-frame coordinates (u, v)."""
    hl = bone.half_length
    t = np.abs(u) / hl  # 0 at the centre, 1 at the tip
    shaft_end = 1.0 - bone.end_cap
    flare = 1.0 + bone.flare * np.clip((t - shaft_end * 0.75) / (1.0 - shaft_end * 0.75), 0.0, 1.0) ** 2
    outer = bone.radius * flare
    # rounded tip: the radius falls to zero over the last few percent like an ellipsoid cap
    tip = np.clip((t - 0.93) / 0.07, 0.0, 1.0)
    outer = outer * np.sqrt(np.maximum(1.0 - tip**2, 0.0))
    outer = np.where(t <= 1.0, outer, 0.0)
    # the canal narrows into cancellous bone towards the ends
    epiphysis = np.clip((t - shaft_end) / bone.end_cap, 0.0, 1.0)
    canal = bone.radius * bone.canal_ratio * (1.0 - epiphysis)
    cortex_shell = bone.radius * (1.0 - bone.canal_ratio) * (1.0 - 0.6 * epiphysis)
    cancellous_r = np.maximum(outer - cortex_shell, 0.0)
    outer_chord = _chord(outer, v)
    inner_chord = _chord(cancellous_r, v)
    canal_chord = _chord(canal, v)
    return (
        MU_CORTEX * (outer_chord - inner_chord)
        + MU_CANCELLOUS * (inner_chord - canal_chord)
        + MU_MARROW * canal_chord
    )


def _rotate(u: np.ndarray, v: np.ndarray, angle: float, pu: float, pv: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate frame coordinates by ``angle`` about the point (pu, pv)."""
    c, s = math.cos(angle), math.sin(angle)
    du, dv = u - pu, v - pv
    return pu + du * c - dv * s, pv + du * s + dv * c


def bone_attenuation(
    bone: Bone, yy: np.ndarray, xx: np.ndarray, fracture: Fracture | None = None
) -> np.ndarray:
    """Projected attenuation of one bone, broken along ``fracture`` when given."""
    u, v = _bone_frame(bone, yy, xx)
    if fracture is None:
        return _tube_attenuation(bone, u, v)
    u0 = (fracture.position - 0.5) * 2.0 * bone.half_length
    tan_phi = math.tan(fracture.line_angle)
    half_gap = fracture.gap / 2.0
    # jagged fracture edge: a small deterministic ripple along the line (real fractures are not straight)
    ripple = 0.6 * half_gap * np.sin(v * (0.9 / max(bone.radius * 0.25, 1.0)) + fracture.position * 17.0)
    side = u - u0 - v * tan_phi + ripple
    proximal = _tube_attenuation(bone, u, v) * (side < -half_gap)
    # distal fragment: pull the frame back by the displacement, then un-rotate the angulation
    ud = u - fracture.shift_along
    vd = v - fracture.shift_across
    ud, vd = _rotate(ud, vd, -fracture.angulation, u0, 0.0)
    side_d = ud - u0 - vd * tan_phi + ripple
    distal = _tube_attenuation(bone, ud, vd) * (side_d > half_gap)
    total = proximal + distal
    for du, dv, radius, rot in fracture.fragments:
        # a cortical chip: a small flattened ellipse of cortex floating near the fracture site
        fu, fv = _rotate(u - (u0 + du), v - dv, rot, 0.0, 0.0)
        total = total + MU_CORTEX * 0.8 * _chord(radius, np.hypot(fu, fv * 1.8))
    return total


def _soft_tissue(bone: Bone, yy: np.ndarray, xx: np.ndarray, scale: float) -> np.ndarray:
    u, v = _bone_frame(bone, yy, xx)
    radius = bone.radius * scale
    along = np.clip(1.0 - (np.abs(u) / (bone.half_length * 1.6)) ** 4, 0.0, 1.0)
    return MU_SOFT * _chord(radius * np.sqrt(along), v)


_LETTERS = {
    "L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
    "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
}


def _marker(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A lead 'L' or 'R' letter on a faint plastic block, somewhere near a corner."""
    out = np.zeros(shape, np.float32)
    letter = np.array([[c == "1" for c in row] for row in _LETTERS[str(rng.choice(["L", "R"]))]], np.float32)
    cell = max(2, int(min(shape) * rng.uniform(0.007, 0.012)))
    glyph = np.kron(letter, np.ones((cell, cell), np.float32))
    block = np.full((glyph.shape[0] + 2 * cell, glyph.shape[1] + 2 * cell), 0.15, np.float32)
    block[cell : cell + glyph.shape[0], cell : cell + glyph.shape[1]] += glyph * MU_LEAD
    h, w = block.shape
    margin = int(min(shape) * 0.08)
    top = margin if rng.random() < 0.5 else shape[0] - margin - h
    left = margin if rng.random() < 0.5 else shape[1] - margin - w
    out[top : top + h, left : left + w] = block
    return out


def _layout_bones(anatomy: str, shape: tuple[int, int], rng: np.random.Generator) -> list[Bone]:
    """Place the bones of one anatomy with a random pose that fills a realistic share of the field."""
    rows, cols = shape
    short = min(rows, cols)
    long_axis_angle = math.pi / 2 if rows >= cols else 0.0  # along the image's long side
    angle = long_axis_angle + rng.normal(0.0, 0.18)
    cx = cols / 2 + rng.normal(0.0, 0.05) * cols
    cy = rows / 2 + rng.normal(0.0, 0.05) * rows
    length = max(rows, cols) * rng.uniform(0.36, 0.46)
    if anatomy == "femur":
        return [Bone("femur", cx, cy, angle, length, short * rng.uniform(0.075, 0.1), rng.uniform(0.5, 0.62))]
    if anatomy in ("forearm", "leg"):
        names = ("radius", "ulna") if anatomy == "forearm" else ("tibia", "fibula")
        r_main = short * rng.uniform(0.06, 0.08)
        r_second = r_main * (rng.uniform(0.75, 0.95) if anatomy == "forearm" else rng.uniform(0.45, 0.6))
        sep = (r_main + r_second) * rng.uniform(1.15, 1.6)
        nx, ny = -math.sin(angle), math.cos(angle)
        side = 1 if rng.random() < 0.5 else -1
        return [
            Bone(names[0], cx - side * nx * sep / 2, cy - side * ny * sep / 2, angle, length, r_main, rng.uniform(0.5, 0.6)),
            Bone(
                names[1], cx + side * nx * sep / 2, cy + side * ny * sep / 2,
                angle + rng.normal(0.0, 0.03), length * rng.uniform(0.92, 1.0), r_second, rng.uniform(0.45, 0.55),
            ),
        ]
    # hand-like: 3-4 rays (metacarpal + proximal phalanx) fanning out from a common base
    n_rays = int(rng.integers(3, 5))
    spread = rng.uniform(0.08, 0.14)
    ray_len = max(rows, cols) * rng.uniform(0.8, 0.9)
    base_u = -ray_len / 2
    bones = []
    radius = short * rng.uniform(0.045, 0.055)
    for k in range(n_rays):
        a = angle + (k - (n_rays - 1) / 2) * spread
        offset = (k - (n_rays - 1) / 2) * radius * 3.4
        bx = cx + math.cos(angle) * base_u - math.sin(angle) * offset
        by = cy + math.sin(angle) * base_u + math.cos(angle) * offset
        meta_len = ray_len * rng.uniform(0.27, 0.31)
        joint = radius * rng.uniform(0.35, 0.55)
        phal_len = ray_len * rng.uniform(0.18, 0.22)
        c, s = math.cos(a), math.sin(a)
        m_c = (bx + c * meta_len, by + s * meta_len)
        p_c = (bx + c * (2 * meta_len + joint + phal_len), by + s * (2 * meta_len + joint + phal_len))
        bones.append(Bone(f"metacarpal{k + 1}", m_c[0], m_c[1], a, meta_len, radius, 0.5, 0.45, 0.3))
        bones.append(Bone(f"phalanx{k + 1}", p_c[0], p_c[1], a, phal_len, radius * 0.85, 0.45, 0.5, 0.3))
    return bones


def _draw_fracture(kind: str, bone: Bone, rng: np.random.Generator, long_side: int) -> Fracture:
    """Fracture geometry sized so it stays visible after the whole image is shrunk to ~128 px."""
    width = 2.0 * bone.radius
    position = rng.uniform(0.3, 0.7)
    line_angle = rng.normal(0.0, 0.12)
    gap = max(long_side * rng.uniform(0.012, 0.022), 3.0)
    shift_along = 0.0
    shift_across = width * rng.uniform(0.08, 0.2) * rng.choice([-1, 1])
    angulation = rng.normal(0.0, 0.03)
    fragments: list[tuple[float, float, float, float]] = []
    if kind == "oblique":
        line_angle = rng.uniform(0.5, 0.95) * rng.choice([-1, 1])
        gap = max(long_side * rng.uniform(0.01, 0.018), 3.0)
        shift_along = rng.uniform(-0.15, 0.25) * width
    elif kind == "displaced":
        line_angle = rng.normal(0.0, 0.35)
        shift_across = width * rng.uniform(0.3, 0.7) * rng.choice([-1, 1])
        shift_along = -width * rng.uniform(0.0, 0.3)  # overriding fragments overlap (brighter band)
        angulation = rng.uniform(0.06, 0.25) * rng.choice([-1, 1])
        gap = max(long_side * rng.uniform(0.006, 0.014), 2.0)
    elif kind == "comminuted":
        gap = max(long_side * rng.uniform(0.03, 0.05), 5.0)
        for _ in range(int(rng.integers(3, 7))):
            fragments.append(
                (
                    rng.uniform(-0.5, 0.5) * gap,
                    rng.uniform(-1.1, 1.1) * bone.radius,
                    bone.radius * rng.uniform(0.18, 0.4),
                    rng.uniform(0, math.pi),
                )
            )
    elif kind == "hairline":
        gap = rng.uniform(1.2, 2.2) * long_side / 512
        shift_across = 0.0
        angulation = 0.0
        line_angle = rng.normal(0.0, 0.4)
    return Fracture(kind, bone.name, position, line_angle, gap, shift_along, shift_across, angulation, fragments)


def _box(bone: Bone, along: float, across: float, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Pixel bounding box of a rectangle ``along`` x ``across`` (half sizes) around the bone's axis.

    Bones cover a small part of the field; evaluating them only there is what keeps the
    generator fast (a hand has eight bones)."""
    c, s = abs(math.cos(bone.angle)), abs(math.sin(bone.angle))
    half_x, half_y = c * along + s * across + 2, s * along + c * across + 2
    top, bottom = max(int(bone.cy - half_y), 0), min(int(bone.cy + half_y) + 1, shape[0])
    left, right = max(int(bone.cx - half_x), 0), min(int(bone.cx + half_x) + 1, shape[1])
    return slice(top, max(bottom, top)), slice(left, max(right, left))


@dataclass
class RadiographPhantom:
    """One simulated projection: the detector signal (float, bone high) and its ground truth."""

    signal: np.ndarray  # float32 in [0, 1], higher = more attenuation (bone bright)
    anatomy: str
    fracture: Fracture | None
    marker: bool


def simulate_radiograph(
    shape: tuple[int, int],
    rng: np.random.Generator,
    anatomy: str,
    fracture_kind: str | None,
    fracture_rng: np.random.Generator | None = None,
) -> RadiographPhantom:
    """Simulate one radiograph of ``anatomy`` with a fracture of ``fracture_kind`` (None = clean).

    The fracture is drawn from ``fracture_rng`` (default: a child of ``rng``), so the same
    ``rng`` state with and without a fracture gives the same image apart from the break.
    """
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    fracture_rng = fracture_rng or np.random.default_rng(rng.bit_generator.seed_seq.spawn(1)[0])
    bones = _layout_bones(anatomy, shape, rng)
    fracture = None
    if fracture_kind is not None:
        # long-bone fractures go to the main bone; in the hand to a metacarpal
        candidates = [i for i, b in enumerate(bones) if not b.name.startswith(("fibula", "phalanx"))]
        target = candidates[int(fracture_rng.integers(len(candidates)))]
        fracture = _draw_fracture(fracture_kind, bones[target], fracture_rng, max(shape))
    soft_scale = rng.uniform(2.4, 3.6)
    attenuation = np.zeros(shape, np.float32)
    soft = np.zeros(shape, np.float32)
    for bone in bones:
        broken = fracture is not None and bone.name == fracture.bone
        margin = 0.0
        if broken:  # room for the displaced fragment and chips
            margin = abs(fracture.shift_across) + abs(fracture.shift_along) + abs(math.sin(fracture.angulation)) * bone.half_length * 2 + bone.radius
        box = _box(bone, bone.half_length + margin, bone.radius * (1 + bone.flare) + margin, shape)
        attenuation[box] += bone_attenuation(bone, yy[box], xx[box], fracture if broken else None)
        scale = soft_scale if anatomy != "hand" else soft_scale * 0.7
        box = _box(bone, bone.half_length * 1.6, bone.radius * scale, shape)
        soft[box] = np.maximum(soft[box], _soft_tissue(bone, yy[box], xx[box], scale))
        if broken:
            u0 = (fracture.position - 0.5) * 2.0 * bone.half_length
            fracture.row = bone.cy + math.sin(bone.angle) * u0
            fracture.col = bone.cx + math.cos(bone.angle) * u0
    # trabecular texture: smoothed noise, only where there is bone
    texture = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.5)
    attenuation = attenuation * (1.0 + 0.12 * texture) + soft
    has_marker = bool(rng.random() < 0.4)
    marker = _marker(shape, rng) if has_marker else None
    if marker is not None:
        attenuation += marker
    # exposure: heel effect along a random anode-cathode axis, quantum noise, detector blur
    heel_dir = rng.uniform(0, 2 * math.pi)
    heel = 1.0 + rng.uniform(0.08, 0.2) * ((xx / cols - 0.5) * math.cos(heel_dir) + (yy / rows - 0.5) * math.sin(heel_dir))
    counts = rng.uniform(3000.0, 20000.0)
    intensity = heel * np.exp(-attenuation)
    # collimation: blades shield the border; a little scatter still reaches the detector there
    top, bottom = (int(rows * f) for f in (rng.uniform(0.0, 0.07), 1.0 - rng.uniform(0.0, 0.07)))
    left, right = (int(cols * f) for f in (rng.uniform(0.0, 0.07), 1.0 - rng.uniform(0.0, 0.07)))
    collimated = np.ones(shape, bool)
    collimated[top:bottom, left:right] = False
    intensity = np.where(collimated, intensity * 0.04, intensity)
    noisy = intensity + rng.standard_normal(shape).astype(np.float32) * np.sqrt(intensity / counts)
    noisy = ndimage.gaussian_filter(np.maximum(noisy, 1e-4), 0.6)
    signal = -np.log(noisy)  # log detector: more attenuation -> higher value
    # "for presentation" processing: a percentile window inside the collimated field, soft clipping
    field_mask = ~collimated if marker is None else ~collimated & (marker == 0)
    inside = signal[field_mask]
    lo, hi = np.percentile(inside[:: max(1, inside.size // 20000)], [0.5, 99.8])
    signal = np.clip((signal - lo) / max(hi - lo, 1e-3), 0.0, 1.15) / 1.15
    return RadiographPhantom(signal.astype(np.float32), anatomy, fracture, has_marker)
