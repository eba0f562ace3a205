"""Safe names and atomic writes for every file the package writes (outputs, queues, caches).

Nothing here knows about DICOM or images, so every layer may use it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def stable_hash(*parts: object, length: int = 16) -> str:
    """A short hex digest of ``parts``: safe as a file name whatever the parts contain."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:length]


class UnsafeOutputError(OSError):
    """A symlink (or another non-regular entry) where an output file or folder should be."""


def fsync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable; best effort (some file systems refuse a folder fsync)."""
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


def atomic_write_bytes(path: str | os.PathLike, chunks: Iterable[bytes] | bytes | Path) -> Path:
    """Write to a temporary file in the same folder, fsync, then ``os.replace``; a ``Path`` is copied
    in 1 MiB chunks (a received DICOM file never needs to fit in memory)."""
    with atomic_file(path) as handle:
        if isinstance(chunks, Path):
            with chunks.open("rb") as source:
                shutil.copyfileobj(source, handle, 1 << 20)
            return Path(path)
        for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
            handle.write(chunk)
    return Path(path)


__all__ = ["UnsafeOutputError", "atomic_file", "atomic_write_bytes", "fsync_directory", "stable_hash"]
