"""Cheap content checks that decide which reader a file goes to, before any parser sees it.

pydicom's ``force=True`` will happily "parse" any byte stream, so a file without the Part 10
preamble is handed to pydicom only when its first bytes look like a DICOM data element.
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path
from typing import BinaryIO

from .errors import ImageReadError, ReadFailure

#: How many leading bytes the checks need (preamble + "DICM" + one element header).
HEAD_SIZE = 144

_VALID_VRS = {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB",
    b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
    b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
}
# Groups a dataset without file meta plausibly starts with (command/meta/directory/identifying).
# Value: the highest element number that may plausibly come first in that group.
_FIRST_GROUPS = {0x0000: 0x0900, 0x0002: 0x0100, 0x0004: 0x1600, 0x0008: 0x0100}

NIFTI_SUFFIXES = (".nii", ".nii.gz")
PNG_SUFFIXES = (".png",)
JPEG_SUFFIXES = (".jpg", ".jpeg")
DICOM_SUFFIXES = (".dcm", ".dicom")
#: Every file name ending ``read_image`` accepts (lower case). The format is still decided by
#: content; this table is what folder walks and datalist builders take for "an image file".
IMAGE_SUFFIXES = DICOM_SUFFIXES + NIFTI_SUFFIXES + PNG_SUFFIXES + JPEG_SUFFIXES


def has_image_suffix(path: str | Path) -> bool:
    """Whether ``path``'s name ends in one of :data:`IMAGE_SUFFIXES` (any case)."""
    return str(path).lower().endswith(IMAGE_SUFFIXES)


def has_dicom_preamble(head: bytes) -> bool:
    """A DICOM Part 10 file: 128-byte preamble followed by ``DICM``."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def looks_like_bare_dicom(head: bytes, file_size: int) -> bool:
    """A dataset without preamble/file meta: the first bytes must form a sane element header.

    Accepts little- and big-endian, explicit and implicit VR, starting in group 0000/0002/0004/0008;
    random or text files almost never pass, so they are rejected as NOT_DICOM instead of being
    "parsed" by ``force=True``.
    """
    if len(head) < 8:
        return False
    for endian in "<>":
        group, element = struct.unpack(endian + "HH", head[:4])
        if group not in _FIRST_GROUPS:
            continue
        if element > _FIRST_GROUPS[group]:
            continue  # a dataset begins with a low element of its first group
        vr = head[4:6]
        if vr in _VALID_VRS:
            return True
        (length,) = struct.unpack(endian + "I", head[4:8])
        if 0 < length <= max(file_size - 8, 0) and length < 1 << 16:
            return True
    return False


def is_nifti_header(head: bytes) -> bool:
    """NIfTI-1 (``n+1``/``ni1`` at byte 344) or NIfTI-2 (``n+2`` at byte 4)."""
    return (len(head) >= 348 and head[344:347] in (b"n+1", b"ni1")) or head[4:7] == b"n+2"


def detect_format(path: str | Path, head: bytes, file_size: int) -> str:
    """Return ``dicom``, ``nifti``, ``png`` or ``jpeg`` from content (suffix only for gzip NIfTI)."""
    name = str(path).lower()
    if has_dicom_preamble(head):
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x1f\x8b") and name.endswith(".nii.gz"):
        return "nifti"
    if is_nifti_header(head) and name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if looks_like_bare_dicom(head, file_size):
        return "dicom"
    if name.endswith(NIFTI_SUFFIXES + PNG_SUFFIXES + JPEG_SUFFIXES):
        raise ImageReadError(path, ReadFailure.UNSUPPORTED_FORMAT, "content does not match the file suffix")
    raise ImageReadError(path, ReadFailure.NOT_DICOM, "no DICOM preamble and no plausible DICOM element at the start")


_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device"}


def open_regular(path: str | Path) -> BinaryIO:
    """Open a regular file for reading; anything else is refused without blocking.

    ``open()`` on a FIFO waits for a writer forever; ``O_NONBLOCK`` returns at once, and the
    type is then checked on the open descriptor (no race with a swapped symlink).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(21, "Is a directory", str(path))
        if not stat.S_ISREG(mode):
            kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
            raise ImageReadError(path, ReadFailure.NOT_REGULAR_FILE, f"{kind}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_head(path: str | Path) -> tuple[bytes, int]:
    """The first bytes of a file and its size; NOT_FOUND when it cannot be opened."""
    try:
        with open_regular(path) as fh:
            head = fh.read(HEAD_SIZE + 256)
            fh.seek(0, 2)
            size = fh.tell()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        raise ImageReadError(path, ReadFailure.NOT_FOUND, f"{type(exc).__name__}: {exc.strerror or exc}") from None
    except OSError as exc:
        raise ImageReadError(path, ReadFailure.NOT_FOUND, f"cannot open: {exc}") from None
    return head, size


def is_dicom_file(path: str | Path) -> bool:
    """True when the file's content looks like DICOM (with or without preamble); never raises."""
    try:
        head, size = read_head(path)
    except ImageReadError:
        return False
    return has_dicom_preamble(head) or looks_like_bare_dicom(head, size)
