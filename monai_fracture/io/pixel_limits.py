"""Dimensions inside compressed pixel streams, checked before any decoder allocates.

Decoders size their output from the stream they are handed (JPEG SOF, JPEG-LS SOF55, JPEG 2000
SIZ, the RLE header), not from Rows/Columns: a file of a few KB whose frame header claims
65535 x 65535 makes libjpeg ask for gigabytes. Every frame about to be decoded is therefore
peeked at here and refused when its own dimensions disagree with the DICOM header (which the
element limit has already checked). A deflated dataset is inflated by pydicom in one call with
no bound, so its inflated size is measured first, in bounded chunks.

Every decode is also held to a memory budget per image (a file, or a whole series volume):
the bytes it will hold at its peak, computed before anything is allocated (``decode_cost``),
must not pass ``image_budget_bytes()`` (``MONAI_FRACTURE_MAX_IMAGE_MIB``, ``score
--max-image-mib``).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from pydicom.encaps import generate_fragmented_frames
from pydicom.uid import (
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    UID,
    RLELossless,
)

from .errors import ImageReadError, ReadFailure

#: Per-image memory budget in MiB when ``MONAI_FRACTURE_MAX_IMAGE_MIB`` is unset: a 16-bit CT series of
#: 512 x 512 x 1300 slices (float32 volume + its files), any radiograph under the element limit.
DEFAULT_IMAGE_BUDGET_MIB = 2048
#: A deflated dataset may inflate to at most this many bytes (2**28 16-bit values plus headers), and
#: never past half the budget: pydicom holds the whole inflated body and a copy of each element.
MAX_INFLATED_BYTES = (1 << 29) + (64 << 20)
BUDGET_ENVIRONMENT = "MONAI_FRACTURE_MAX_IMAGE_MIB"
#: Bytes of a frame searched for its header: markers before SOF/SIZ are small (tables, APPn).
PEEK_BYTES = 1 << 16
_INFLATE_CHUNK = 1 << 20

#: HTJ2K (PS3.5 A.4.11) is a JPEG 2000 codestream with a CAP marker: the same SIZ segment.
HTJ2K_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"})
_J2K = frozenset(str(u) for u in JPEG2000TransferSyntaxes) | HTJ2K_SYNTAXES
_JPEG = frozenset(str(u) for u in JPEGTransferSyntaxes)
_JPEG_LS = frozenset(str(u) for u in JPEGLSTransferSyntaxes)
# JPEG start-of-frame markers (ITU T.81 B.1.1.3): C0-C3, C5-C7, C9-CB, CD-CF; JPEG-LS uses F7.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset(range(0xD0, 0xDA)) | {0x01}  # RSTn, SOI, EOI, TEM carry no length


def image_budget_bytes() -> int:
    """The per-image budget: ``MONAI_FRACTURE_MAX_IMAGE_MIB`` (read at each call: ``score`` sets it for its workers)."""
    text = os.environ.get(BUDGET_ENVIRONMENT, "").strip()
    try:
        mib = float(text) if text else DEFAULT_IMAGE_BUDGET_MIB
    except ValueError:
        raise ValueError(f"{BUDGET_ENVIRONMENT}={text!r}: a number of MiB expected") from None
    if not mib > 0:
        raise ValueError(f"{BUDGET_ENVIRONMENT}={text!r}: must be positive")
    return int(mib * (1 << 20))


def decode_cost(values: int, bits_allocated: int, held_bytes: int = 0) -> int:
    """Peak bytes of decoding ``values`` samples: the decoder's output at Bits Allocated, our float32
    copy of it, and ``held_bytes`` already in memory (the file's pixel data, or a series' files)."""
    return held_bytes + values * ((max(bits_allocated, 8) + 7) // 8 + 4)


def check_budget(path: Any, cost: int, what: str) -> None:
    """Refuse before allocating when ``cost`` bytes pass the per-image budget."""
    budget = image_budget_bytes()
    if cost > budget:
        raise _fail(path, f"{what} needs {cost / (1 << 20):.1f} MiB to decode, over the per-image budget of "
                          f"{budget / (1 << 20):.0f} MiB (score --max-image-mib, {BUDGET_ENVIRONMENT})", ReadFailure.OVER_MEMORY_BUDGET)


@dataclass(frozen=True)
class StreamGeometry:
    """What a compressed frame says about itself."""

    rows: int
    columns: int
    components: int
    precision: int
    codec: str


def _fail(path: Any, detail: str, reason: ReadFailure = ReadFailure.UNDECODABLE) -> ImageReadError:
    return ImageReadError(path, reason, detail)


def jpeg_geometry(data: bytes, path: Any = None) -> StreamGeometry:
    """The frame header (SOFn, or SOF55 for JPEG-LS) of a JPEG / JPEG-LS stream."""
    if data[:2] != b"\xff\xd8":
        raise _fail(path, "JPEG stream does not start with SOI")
    pos = 2
    while pos + 2 <= len(data):
        if data[pos] != 0xFF:
            raise _fail(path, f"JPEG stream: no marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            raise _fail(path, "JPEG stream ends (EOI) before any frame header")
        if marker in _STANDALONE:
            pos += 2
            continue
        if pos + 4 > len(data):
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            raise _fail(path, f"JPEG marker FF{marker:02X} with length {length}")
        if marker in _SOF or marker == 0xF7:
            if pos + 10 > len(data):
                break
            precision, rows, columns, components = struct.unpack(">BHHB", data[pos + 4 : pos + 10])
            codec = "JPEG-LS" if marker == 0xF7 else "JPEG"
            return StreamGeometry(rows, columns, components, precision, codec)
        if marker == 0xDA:
            raise _fail(path, "JPEG stream: scan data before any frame header")
        pos += 2 + length
    raise _fail(path, "JPEG stream: no frame header (SOF) in its first bytes", ReadFailure.TRUNCATED)


def j2k_geometry(data: bytes, path: Any = None) -> StreamGeometry:
    """The SIZ segment of a JPEG 2000 / HTJ2K codestream (a JP2 wrapper is searched through)."""
    start = data.find(b"\xff\x4f\xff\x51")
    if start < 0:
        raise _fail(path, "JPEG 2000 stream: no SOC + SIZ marker")
    siz = data[start + 4 :]
    if len(siz) < 38:
        raise _fail(path, "JPEG 2000 SIZ segment cut short", ReadFailure.TRUNCATED)
    _, _, xsiz, ysiz, xosiz, yosiz, xtsiz, ytsiz, _, _, csiz = struct.unpack(">HHIIIIIIIIH", siz[:38])
    if csiz < 1 or len(siz) < 38 + 3 * csiz:
        raise _fail(path, f"JPEG 2000 SIZ: {csiz} components")
    if xsiz <= xosiz or ysiz <= yosiz or xtsiz == 0 or ytsiz == 0:
        raise _fail(path, f"JPEG 2000 SIZ: image {xsiz}x{ysiz} offset {xosiz},{yosiz} tile {xtsiz}x{ytsiz}")
    components = [struct.unpack(">BBB", siz[38 + 3 * i : 41 + 3 * i]) for i in range(csiz)]
    if any(dx != 1 or dy != 1 for _, dx, dy in components):
        raise _fail(path, "JPEG 2000 SIZ: subsampled components")
    precision = max((ssiz & 0x7F) + 1 for ssiz, _, _ in components)
    return StreamGeometry(ysiz - yosiz, xsiz - xosiz, csiz, precision, "JPEG 2000")


def check_rle_header(data: bytes, expected_segments: int, path: Any = None, frame_length: int | None = None) -> None:
    """PS3.5 G.5: the 64-byte header's segment count and offsets must fit the frame.

    ``data`` may be only the frame's first bytes; ``frame_length`` is then the whole frame's length.
    """
    frame_length = len(data) if frame_length is None else frame_length
    if len(data) < 64:
        raise _fail(path, "RLE frame shorter than its 64-byte header", ReadFailure.TRUNCATED)
    count, *offsets = struct.unpack("<16I", data[:64])
    if count != expected_segments:
        raise _fail(path, f"RLE header has {count} segments, the image needs {expected_segments}", ReadFailure.INVALID_VALUE)
    used = offsets[:count]
    if used[0] != 64 or any(b <= a for a, b in zip(used, used[1:])) or used[-1] >= frame_length:
        raise _fail(path, f"RLE segment offsets {used} do not fit a {frame_length}-byte frame", ReadFailure.INVALID_VALUE)


def _frame_heads(pixel_data: bytes, frames: int, wanted: int | None) -> Iterator[tuple[int, bytes, int]]:
    """(frame index, first bytes of the frame, the frame's whole length) for the frame(s) to be decoded."""
    for index, fragments in enumerate(generate_fragmented_frames(pixel_data, number_of_frames=frames)):
        if wanted is None or index == wanted:
            head = bytearray()
            length = 0
            for fragment in fragments:
                length += len(fragment)
                if len(head) < PEEK_BYTES:
                    head += fragment[: PEEK_BYTES - len(head)]
            yield index, bytes(head), length
            if wanted is not None:
                return


def check_encapsulated_frames(pixel_data: bytes, syntax: UID, rows: int, columns: int, samples: int,
                              bits_allocated: int, frames: int, index: int | None, path: Any) -> None:
    """Refuse a frame whose stream header disagrees with Rows/Columns/Samples per Pixel.

    ``index`` None checks every frame (a volume is about to be decoded), else only that one.
    JPEG 2000 may carry fewer bits than Bits Allocated (lossy), never more.
    """
    uid = str(syntax)
    if uid not in _JPEG | _JPEG_LS | _J2K and uid != str(RLELossless):
        return
    try:
        heads = list(_frame_heads(pixel_data, frames, index))
    except ImageReadError:
        raise
    except Exception as exc:  # pydicom's fragment parser on a broken item structure
        raise _fail(path, f"encapsulated pixel data: {type(exc).__name__}: {exc}"[:400]) from None
    if not heads:
        raise _fail(path, "encapsulated pixel data holds no frame", ReadFailure.TRUNCATED)
    for frame, head, length in heads:
        try:
            if uid == str(RLELossless):
                check_rle_header(head, samples * max(1, bits_allocated // 8), path, frame_length=length)
                continue
            geometry = j2k_geometry(head, path) if uid in _J2K else jpeg_geometry(head, path)
        except ImageReadError as err:  # name the transfer syntax, as decoder failures do
            raise _fail(path, f"{syntax.name} ({uid}): frame {frame}: {err.detail}", err.reason) from None
        if (geometry.rows, geometry.columns, geometry.components) != (rows, columns, samples) or geometry.precision > max(bits_allocated, 8):
            raise _fail(
                path,
                f"frame {frame}: {geometry.codec} stream is {geometry.rows} x {geometry.columns} x {geometry.components} "
                f"at {geometry.precision} bits, the header says {rows} x {columns} x {samples} at {bits_allocated} bits",
                ReadFailure.UNSUPPORTED_GEOMETRY,
            )
        # what the decoder allocates, from the stream's own frame header (every frame the same size)
        stream_values = geometry.rows * geometry.columns * geometry.components * len(heads)
        check_budget(path, decode_cost(stream_values, max(bits_allocated, geometry.precision), len(pixel_data)),
                     f"{len(heads)} {geometry.codec} frame(s) of {geometry.rows} x {geometry.columns} x {geometry.components}")


def check_inflated_size(handle: BinaryIO, path: Any, limit: int | None = None) -> int:
    """Inflate a deflated dataset body in bounded chunks and return its size; refuse past ``limit``
    (default: ``MAX_INFLATED_BYTES`` or half the per-image budget, the smaller).

    Memory stays at one chunk; the handle's position is restored.
    """
    limit = min(MAX_INFLATED_BYTES, image_budget_bytes() // 2) if limit is None else limit
    start = handle.tell()
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        while not inflater.eof:
            chunk = inflater.unconsumed_tail or handle.read(_INFLATE_CHUNK)
            if not chunk:
                break
            total += len(inflater.decompress(chunk, _INFLATE_CHUNK))
            if total > limit:
                raise _fail(path, f"deflated dataset inflates past {limit / (1 << 20):.0f} MiB (the inflate limit, or half the "
                                  f"per-image budget: score --max-image-mib, {BUDGET_ENVIRONMENT})", ReadFailure.OVER_MEMORY_BUDGET)
    except zlib.error as exc:
        raise _fail(path, f"deflated dataset: {exc}") from None
    finally:
        handle.seek(start)
    return total
