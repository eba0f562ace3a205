"""Output names and atomic writes: nothing is named from a raw tag value, nothing is left half written."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import generate_uid

from monai_fracture.reports.evidence import is_valid_uid


def stable_hash(*parts: object, length: int = 16) -> str:
    """A short hex digest of ``parts``: safe as a file name whatever the parts contain."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:length]


def derived_uid(*parts: object) -> str:
    """A deterministic 2.25 UID from ``parts``: re-running the same model on the same study
    replaces its outputs instead of adding duplicates."""
    return generate_uid(prefix="2.25.", entropy_srcs=[str(p) for p in parts])


def study_folder(out_dir: str | os.PathLike, study_uid: str) -> Path:
    """``out_dir/<hash of the StudyInstanceUID>``: the UID is hashed, never used as a path."""
    return Path(out_dir) / f"study-{stable_hash(study_uid)}"


def object_file_name(prefix: str, sop_uid: str) -> str:
    """``<prefix>_<SOPInstanceUID>.dcm`` for UIDs we generated (validated), else a hash."""
    safe = sop_uid if is_valid_uid(sop_uid) else stable_hash(sop_uid, length=32)
    return f"{prefix}_{safe}.dcm"


def fsync_directory(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary handle on a temporary file in ``path``'s folder, fsync'd and renamed into place on
    success, deleted on any error: readers (and a resumed run) see the whole file or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_directory(path.parent)


def atomic_write_bytes(path: str | os.PathLike, chunks: Iterable[bytes] | bytes) -> Path:
    """Write to a temporary file in the same folder, fsync, then ``os.replace``."""
    with atomic_file(path) as handle:
        for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
            handle.write(chunk)
    return Path(path)


def atomic_write_dataset(path: str | os.PathLike, dataset: Dataset) -> Path:
    """Write a DICOM file (with file meta) atomically."""
    with atomic_file(path) as handle:
        dcmwrite(handle, dataset, enforce_file_format=True)
    return Path(path)


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete ``.*.tmp`` files a killed run left behind (they were never renamed into place)."""
    removed = 0
    root = Path(folder)
    if not root.is_dir():
        return 0
    for tmp in root.rglob(".*.tmp"):
        try:
            tmp.unlink()
            removed += 1
        except OSError:
            pass
    return removed
