"""DICOM files and series into float32 arrays plus our metadata dict."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from tqdm.auto import tqdm

from .dicom_geometry import plane_affine, sort_stack
from .dicom_header import check_is_image, expand_paths, header_meta, parse_dicom, parse_dicom_header, plane_geometry
from .dicom_pixels import PixelLayout, decode_frames, grey_intensity, is_plugin_panic, validate_layout
from .errors import ImageReadError, ReadFailure
from .meta import empty_meta
from .pixel_limits import check_budget, decode_cost
from .sniff import detect_format, open_regular, read_head

logger = logging.getLogger(__name__)

#: Multi-frame files of these modalities become a volume when their frames form one evenly
#: spaced stack (per-frame Plane Position); every other multi-frame file gives its first frame.
VOLUME_MODALITIES = frozenset({"CT", "MR", "PT"})

PathLike = str | Path


@contextlib.contextmanager
def guard(path: object, what: str = "reading") -> Iterator[None]:
    """Let only ImageReadError out: anything pydicom/numpy raise on odd values becomes INVALID_VALUE."""
    try:
        yield
    except (ImageReadError, MemoryError):
        raise
    except BaseException as exc:
        if not isinstance(exc, Exception) and not is_plugin_panic(exc):
            raise  # KeyboardInterrupt, SystemExit, GeneratorExit pass untouched
        raise ImageReadError(path, ReadFailure.INVALID_VALUE, f"{what} failed: {type(exc).__name__}: {exc}"[:600]) from None


def read_bytes(path: PathLike) -> bytes:
    try:
        with open_regular(path) as handle:
            return handle.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        raise ImageReadError(path, ReadFailure.NOT_FOUND, f"{type(exc).__name__}: {exc.strerror or exc}") from None
    except OSError as exc:
        raise ImageReadError(path, ReadFailure.NOT_FOUND, f"cannot read: {exc}") from None


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # parse_dicom names the file and the reason


def read_dicom(path: PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """One DICOM file: (rows, cols) float32, or (frames, rows, cols) for a multi-frame CT/MR/PT volume."""
    # pydicom reads the file itself: no whole-file bytes object beside the dataset (a second
    # copy of the pixel data, and 8 MB of fresh pages per 2048² image). Its pixel data is held
    # while decoding, so a file larger than the budget is refused before it is read.
    check_budget(path, _file_size(Path(path)), "the file")
    ds = parse_dicom(path)
    with guard(path):
        return image_from_dataset(ds, path)


def image_from_dataset(ds: Dataset, path: object) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode an already parsed dataset following the documented rules (docs/reading.md)."""
    check_is_image(ds, path)
    meta = header_meta(ds, path)
    layout = validate_layout(ds, path)
    meta.update(photometric=layout.photometric, bits_stored=layout.bits_stored, num_frames=layout.frames)
    index: int | None = None
    if layout.frames > 1:
        if (meta["modality"] or "").upper() in VOLUME_MODALITIES and layout.samples == 1:
            volume = _enhanced_volume(ds, layout, meta, path)
            if volume is not None:
                return volume, meta
        meta["frame_rule"] = "first_frame"
        index = 0
    stored = decode_frames(ds, layout, path, index)
    values, info = grey_intensity(stored, ds, layout, meta["modality"], path)
    del stored
    meta.update(info)
    _set_plane_affine(meta)
    return values, meta


def _set_plane_affine(meta: dict[str, Any]) -> None:
    spacing = meta["spacing"] or (1.0, 1.0)
    if meta["image_orientation"] is not None and meta["image_position"] is not None:
        meta["affine"], meta["space"] = plane_affine(meta["image_orientation"], meta["image_position"], spacing), "LPS"
    else:
        meta["affine"], meta["space"] = np.diag([spacing[0], spacing[1], 1.0, 1.0]), None


def _enhanced_volume(ds: Dataset, layout: PixelLayout, meta: dict[str, Any], path: object) -> np.ndarray | None:
    """Frames of an enhanced CT/MR/PT file as a sorted volume, or None when they are not one stack."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame or len(per_frame) != layout.frames:
        return None  # no per-frame positions for every frame: not a volume we can place
    geometry = [plane_geometry(ds, frame) for frame in range(layout.frames)]
    spacing = meta["spacing"]
    try:
        stack = sort_stack(
            path, [g[0] for g in geometry], [g[1] for g in geometry], [spacing] * layout.frames,
            [(layout.rows, layout.columns)] * layout.frames, [f"frame {i}" for i in range(layout.frames)],
        )
    except ImageReadError as exc:
        logger.info("%s: frames do not form one volume (%s); using the first frame", path, exc.detail)
        return None
    stored = decode_frames(ds, layout, path, None)
    volume = np.empty((layout.frames, layout.rows, layout.columns), dtype=np.float32)
    info: dict[str, Any] = {}
    for k, i in enumerate(stack.order):
        volume[k], info = grey_intensity(stored[i], ds, layout, meta["modality"], path, frame=i)
    meta.update(info)
    meta.update(
        frame_rule="volume", spacing=(stack.slice_spacing, *spacing), affine=stack.affine, space="LPS",
        image_position=geometry[stack.order[0]][1],
    )
    return volume


def read_dicom_series(paths: PathLike | Iterable[PathLike]) -> tuple[np.ndarray, dict[str, Any]]:
    """Slices of one series (any order, or a folder) as a (slices, rows, cols) float32 volume.

    Slices are sorted along the normal of Image Orientation (Patient) by Image Position (Patient);
    a series that is not one evenly spaced stack is refused with INCONSISTENT_SERIES.
    """
    files = [f for f in expand_paths(paths, dicom_only=True) if f.name.upper() != "DICOMDIR"]
    label: object = paths if isinstance(paths, (str, Path)) else (files[0] if files else "<empty series>")
    if not files:
        raise ImageReadError(label, ReadFailure.NOT_FOUND, "no DICOM files found")
    if len(files) == 1:
        values, meta = read_dicom(files[0])
        if values.ndim == 2:  # a one-slice "volume": the slice step is the slice thickness
            step = meta["slice_thickness"] or 1.0
            values = values[None]
            meta["spacing"] = (step, *(meta["spacing"] or (1.0, 1.0)))
            meta["frame_rule"] = "series"
            meta["affine"] = meta["affine"][:, [2, 0, 1, 3]]
            meta["affine"][:3, 0] *= step
        return values, meta
    # every file is parsed (pixel data read) before the volume is filled: their bytes count against the budget
    held = sum(_file_size(f) for f in files)
    check_budget(label, held, f"a series of {len(files)} files")
    parsed: list[tuple[Path, Dataset, PixelLayout, dict[str, Any]]] = []
    for path in files:
        ds = parse_dicom(path)
        with guard(path):
            check_is_image(ds, path)
            layout = validate_layout(ds, path)
            meta = header_meta(ds, path)
        if layout.frames > 1:
            raise ImageReadError(path, ReadFailure.INCONSISTENT_SERIES, f"multi-frame file ({layout.frames} frames) inside a series")
        parsed.append((path, ds, layout, meta))
    for key, what in (("series_uid", "Series Instance UID"), ("modality", "Modality"), ("photometric", "Photometric Interpretation")):
        found = {m[key] for _, _, _, m in parsed if m[key] is not None}
        if len(found) > 1:
            raise ImageReadError(label, ReadFailure.INCONSISTENT_SERIES, f"mixed {what}: {sorted(found)}")
    with guard(label, "ordering slices"):
        stack = sort_stack(
            label,
            [m["image_orientation"] for *_, m in parsed],
            [m["image_position"] for *_, m in parsed],
            [m["spacing"] for *_, m in parsed],
            [(lay.rows, lay.columns) for _, _, lay, _ in parsed],
            [p.name for p, *_ in parsed],
            single_slice_spacing=parsed[0][3]["slice_thickness"],
        )
    first = parsed[stack.order[0]]
    rows, columns, bits = first[2].rows, first[2].columns, max(lay.bits_allocated for _, _, lay, _ in parsed)
    # the float32 volume, plus one slice's decoder output and float32 copy while it is filled
    check_budget(label, held + len(parsed) * rows * columns * 4 + decode_cost(rows * columns, bits),
                 f"a volume of {len(parsed)} x {rows} x {columns}")
    volume = np.empty((len(parsed), first[2].rows, first[2].columns), dtype=np.float32)
    infos: list[dict[str, Any]] = []
    for k, i in enumerate(stack.order):
        path, ds, layout, meta = parsed[i]
        with guard(path):
            stored = decode_frames(ds, layout, path, None)
            volume[k], info = grey_intensity(stored, ds, layout, meta["modality"], path)
        infos.append(info)
        parsed[i] = (path, Dataset(), layout, meta)  # let the decoded file's bytes go
    if len({i["presentation_ready"] for i in infos}) > 1:
        raise ImageReadError(label, ReadFailure.INCONSISTENT_SERIES, "some slices carry a window, others not")
    meta = dict(first[3])
    meta.update(infos[0])
    meta.update(
        filename=str(label), frame_rule="series", num_frames=len(parsed), sop_uid=None,
        spacing=(stack.slice_spacing, *first[3]["spacing"]), affine=stack.affine, space="LPS",
        sop_uids=[parsed[i][3]["sop_uid"] for i in stack.order],
        filenames=[str(parsed[i][0]) for i in stack.order],
        window=infos[0]["window"],
    )
    return volume, meta


def scan_dicom_headers(paths: PathLike | Iterable[PathLike], progress: bool | None = None) -> list[dict[str, Any]]:
    """One dict per file (folders walked): our metadata keys plus ``path``, ``error`` and ``reason``.

    Cheap: headers only (``stop_before_pixels``), yet NOT_DICOM / NOT_AN_IMAGE /
    NO_PIXEL_DATA are already known. PNG/JPEG/NIfTI files are listed with their format and no UIDs.
    ``error`` is the ImageReadError the file would raise early, or None.
    """
    files = expand_paths(paths)
    show = sys.stderr.isatty() if progress is None else progress
    entries: list[dict[str, Any]] = []
    for path in tqdm(files, desc="scanning headers", unit="file", disable=not show):
        entry: dict[str, Any] = {"path": str(path), "error": None, "reason": None}
        try:
            head, size = read_head(path)
            fmt = detect_format(path, head, size)
            if fmt != "dicom":
                entry.update(empty_meta(path, fmt))
            else:
                ds, pixels_follow = parse_dicom_header(path)
                with guard(path, "reading the header"):
                    entry.update(header_meta(ds, path))
                    check_is_image(ds, path, pixels_follow)
        except ImageReadError as exc:
            entry["error"], entry["reason"] = exc, exc.reason.value
        entry["path"] = str(path)
        entries.append(entry)
    return entries


def group_series(headers: Iterable[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Readable DICOM entries from ``scan_dicom_headers`` grouped by (study UID, series UID).

    Entries without a Series Instance UID form a group of their own (keyed by their path).
    Within a group, entries are ordered by Instance Number, then path.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for entry in headers:
        if entry.get("error") is not None or entry.get("format") != "dicom":
            continue
        key = (entry.get("study_uid") or "", entry.get("series_uid") or f"file:{entry['path']}")
        groups.setdefault(key, []).append(entry)
    for members in groups.values():
        members.sort(key=lambda e: (e.get("instance_number") is None, e.get("instance_number") or 0, e["path"]))
    return groups
