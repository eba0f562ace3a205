"""Output names and atomic writes: nothing is named from a raw tag value, nothing is left half written."""

from __future__ import annotations

import hashlib
import io
import os
import stat
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


class UnsafeOutputError(OSError):
    """A symlink (or another non-regular entry) where an output file or folder should be."""


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
    success, deleted on any error: readers (and a resumed run) see the whole file or none.
    The file is 0600 (``mkstemp``); a symlink at ``path`` is refused."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():  # links among the folders inside --out are refused at start (check_output_tree)
        raise UnsafeOutputError(f"{path}: a symbolic link in the way of an output; refusing to write")
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
