"""Refuse splits that leak: a group, a file's bytes or an image's pixels on both sides.

The seed paper's FracAtlas split put copies of the same radiograph in train and test; the
copies there are re-encoded, so byte hashes alone miss them. We hash bytes (sha256 of the
file) and pixels (sha256 of the decoded float32 array and its shape), once per file, cached by
path + size + mtime so re-checking thousands of files is cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from monai_fracture.files import atomic_write_bytes

logger = logging.getLogger(__name__)


class LeakageError(ValueError):
    """A split would put the same patient/group, file or image on both sides."""

    def __init__(self, conflicts: list[str]) -> None:
        self.conflicts = conflicts
        shown = "\n  ".join(conflicts[:20])
        more = f"\n  ... and {len(conflicts) - 20} more" if len(conflicts) > 20 else ""
        super().__init__(f"refusing a leaky split ({len(conflicts)} conflicts):\n  {shown}{more}")


def _files_of(image: str | list[str]) -> list[Path]:
    """The files behind one datalist image: a file, a list of files, or a series folder."""
    if isinstance(image, (list, tuple)):
        return [Path(p) for p in image]
    path = Path(image)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file())
    return [path]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _decode_fallback(path: Path) -> np.ndarray:
    """Decode without monai_fracture.io (absent or failing): pydicom, nibabel or Pillow."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        return np.asarray(ds.pixel_array, dtype=np.float32)
    except pydicom.errors.InvalidDicomError:
        pass
    from monai_fracture.io.sniff import NIFTI_SUFFIXES

    if path.name.lower().endswith(NIFTI_SUFFIXES):
        import nibabel

        return np.asarray(nibabel.load(path).get_fdata(), dtype=np.float32)
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("F"), dtype=np.float32)


def decode_pixels(path: Path) -> np.ndarray:
    """Decoded pixels through ``monai_fracture.io.read_image`` when it exists, else a fallback."""
    try:
        from monai_fracture.io import read_image
    except ImportError:
        return _decode_fallback(path)
    try:
        array, _ = read_image(str(path))
    except Exception as err:  # noqa: BLE001 - io refuses some files the plain decoders still read
        logger.debug("%s: io could not read it (%s); trying pydicom/Pillow", path, err)
        return _decode_fallback(path)
    return np.asarray(array, dtype=np.float32)


def pixel_sha256(path: Path) -> str:
    array = np.ascontiguousarray(decode_pixels(path), dtype=np.float32)
    digest = hashlib.sha256(str(array.shape).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


class HashCache:
    """sha256 of bytes and pixels per file, kept in a JSON file keyed by path, size and mtime."""

    def __init__(self, cache_file: str | os.PathLike | None = None) -> None:
        self.cache_file = Path(cache_file) if cache_file else None
        self._entries: dict[str, dict] = {}
        self._dirty = False
        if self.cache_file and self.cache_file.is_file():
            try:
                self._entries = json.loads(self.cache_file.read_text())
            except (OSError, ValueError) as err:
                logger.warning("%s: ignoring unreadable hash cache: %s", self.cache_file, err)

    def _entry(self, path: Path) -> dict:
        stat = path.stat()
        key = str(path.resolve())
        stamp = [stat.st_size, stat.st_mtime_ns]
        entry = self._entries.get(key)
        if entry is None or entry.get("stamp") != stamp:
            entry = {"stamp": stamp}
            self._entries[key] = entry
        return entry

    def bytes_hash(self, path: Path) -> str:
        entry = self._entry(path)
        if "bytes" not in entry:
            entry["bytes"] = file_sha256(path)
            self._dirty = True
        return entry["bytes"]

    def pixel_hash(self, path: Path) -> str | None:
        """Pixel hash, or None (logged) when the file cannot be decoded at all."""
        entry = self._entry(path)
        if "pixels" not in entry:
            try:
                entry["pixels"] = pixel_sha256(path)
            except Exception as err:  # noqa: BLE001 - any decoder failure means "no pixel identity"
                logger.warning("%s: cannot decode for the pixel check: %s", path, err)
                entry["pixels"] = None
            self._dirty = True
        return entry["pixels"]

    def save(self) -> None:
        if self.cache_file and self._dirty:
            atomic_write_bytes(self.cache_file, json.dumps(self._entries).encode("utf-8"))
            self._dirty = False


def _item_hash(image, hasher) -> str | None:
    files = _files_of(image)
    hashes = [hasher(p) for p in files]
    if any(h is None for h in hashes):
        return None
    if len(hashes) == 1:
        return hashes[0]
    return hashlib.sha256("".join(hashes).encode()).hexdigest()


def _conflicts_by(key_name: str, keyed: dict[str, set[str]], examples: dict[str, list[str]]) -> list[str]:
    out = []
    for key, splits in sorted(keyed.items()):
        if len(splits) > 1:
            out.append(f"{key_name} {key[:16]} in {sorted(splits)}: {', '.join(examples[key][:3])}")
    return out


def find_leaks(
    datalist: dict[str, list],
    *,
    check_groups: bool = True,
    check_bytes: bool = True,
    check_pixels: bool = True,
    cache: HashCache | None = None,
    progress: bool | None = None,
) -> list[str]:
    """Every way the parts of ``datalist`` overlap, as readable lines (empty when clean).

    Image paths must be absolute or relative to the working directory.
    """
    from tqdm.auto import tqdm

    cache = cache or HashCache()
    parts = [(key, items) for key, items in datalist.items() if isinstance(items, list) and items]
    parts = [(key, [it if isinstance(it, dict) else {"image": it} for it in items]) for key, items in parts]
    by_group: dict[str, set[str]] = defaultdict(set)
    by_bytes: dict[str, set[str]] = defaultdict(set)
    by_pixels: dict[str, set[str]] = defaultdict(set)
    ex_group: dict[str, list[str]] = defaultdict(list)
    ex_bytes: dict[str, list[str]] = defaultdict(list)
    ex_pixels: dict[str, list[str]] = defaultdict(list)
    total = sum(len(items) for _, items in parts)
    disable = (not os.isatty(2)) if progress is None else not progress
    with tqdm(total=total, desc="leakage check", disable=disable) as bar:
        for key, items in parts:
            for it in items:
                label = str(it["image"])
                if check_groups and it.get("group") is not None:
                    by_group[str(it["group"])].add(key)
                    ex_group[str(it["group"])].append(f"{key}:{Path(label).name}")
                if check_bytes:
                    h = _item_hash(it["image"], cache.bytes_hash)
                    by_bytes[h].add(key)
                    ex_bytes[h].append(f"{key}:{label}")
                if check_pixels:
                    h = _item_hash(it["image"], cache.pixel_hash)
                    if h is not None:
                        by_pixels[h].add(key)
                        ex_pixels[h].append(f"{key}:{label}")
                bar.update(1)
    cache.save()
    return (
        _conflicts_by("group", by_group, ex_group)
        + _conflicts_by("identical bytes", by_bytes, ex_bytes)
        + _conflicts_by("identical pixels", by_pixels, ex_pixels)
    )


def check_no_leakage(datalist: dict[str, list], **kwargs) -> None:
    """Raise :class:`LeakageError` when :func:`find_leaks` finds anything."""
    conflicts = find_leaks(datalist, **kwargs)
    if conflicts:
        raise LeakageError(conflicts)


def duplicate_files(paths: Iterable[str], cache: HashCache | None = None) -> dict[str, list[str]]:
    """Byte-identical files among ``paths`` (sha256 -> paths), for reports."""
    cache = cache or HashCache()
    seen: dict[str, list[str]] = defaultdict(list)
    for p in paths:
        seen[cache.bytes_hash(Path(p))].append(str(p))
    return {h: ps for h, ps in seen.items() if len(ps) > 1}
