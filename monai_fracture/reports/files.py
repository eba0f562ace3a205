"""DICOM output names and writes: nothing is named from a raw tag value, nothing is left half written.

The generic pieces (hashing names, atomic writes) are in :mod:`monai_fracture.files`.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import generate_uid

from monai_fracture.files import UnsafeOutputError, atomic_file, stable_hash
from monai_fracture.reports.evidence import is_valid_uid


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


def check_output_tree(out_dir: str | os.PathLike) -> None:
    """Refuse an output folder with a symlink anywhere inside: a planted link would redirect writes.

    The folder itself may be a link (the user chose it); nothing below it may.
    """
    for root, dirs, files in os.walk(out_dir):
        for name in dirs + files:
            entry = os.path.join(root, name)
            if os.path.islink(entry):
                raise UnsafeOutputError(f"{entry}: a symbolic link inside the output folder; remove it or use another --out")


def open_private_append(path: str | os.PathLike) -> io.FileIO:
    """Append to a file created 0600, never through a symlink (``O_NOFOLLOW``), regular files only."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as err:
        if os.path.islink(path):
            raise UnsafeOutputError(f"{path}: a symbolic link; refusing to write through it") from None
        raise err
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeOutputError(f"{path}: not a regular file; refusing to write to it")
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab", buffering=0)  # unbuffered: nothing is left to flush after a failed write


def atomic_write_dataset(path: str | os.PathLike, dataset: Dataset) -> Path:
    """Write a DICOM file (with file meta) atomically."""
    with atomic_file(path) as handle:
        dcmwrite(handle, dataset, enforce_file_format=True)
    return Path(path)


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete ``.*.tmp`` files a killed run left behind (they were never renamed into place).

    Hidden folders below ``folder`` are not entered: they belong to a layer that manages its own
    files, and may be writing into them right now (the DICOMweb run's ``.dicomweb-spool``, whose
    download thread fills the next chunk while ``score_paths`` resumes the current one).
    """
    removed = 0
    root = Path(folder)
    if not root.is_dir():
        return 0
    for tmp in root.rglob(".*.tmp"):
        if any(part.startswith(".") for part in tmp.relative_to(root).parts[:-1]):
            continue
        try:
            tmp.unlink()
            removed += 1
        except OSError:
            pass
    return removed
