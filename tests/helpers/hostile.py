"""Generated hostile inputs for the hardening tests and benchmarks: each is a few KB on disk.

Every bomb is a valid small DX (16 x 16) whose compressed stream claims far more than the
DICOM header: the header passes the element limit, the decoder would allocate from the stream.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from helpers.dicom_files import dx_header

ROWS = COLUMNS = 16


def small_dx(syntax=ExplicitVRLittleEndian, bits: int = 8, rows: int = ROWS, columns: int = COLUMNS) -> Dataset:
    """A DX header (no pixels yet) that the reader accepts."""
    return dx_header(syntax, rows, columns, bits_allocated=bits, patient_id="HOSTILE", patient_name="Test^Hostile")


def _pixels(bits: int = 8) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 200, (ROWS, COLUMNS)).astype(np.uint8 if bits == 8 else np.uint16)


def _save_encapsulated(path: Path, syntax, frame: bytes, bits: int = 8) -> Path:
    ds = small_dx(syntax, bits)
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def jpeg_frame() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(_pixels()).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def jpegls_frame() -> bytes:
    import imagecodecs

    return bytes(imagecodecs.jpegls_encode(_pixels()))


def j2k_frame() -> bytes:
    import imagecodecs

    return bytes(imagecodecs.jpeg2k_encode(_pixels(), level=0, codecformat="J2K"))


def htj2k_frame() -> bytes:
    import imagecodecs

    return bytes(imagecodecs.htj2k_encode(_pixels(), level=0))


def rle_frame() -> bytes:
    from pydicom.pixels.encoders import RLELosslessEncoder

    return RLELosslessEncoder.encode(_pixels(), rows=ROWS, columns=COLUMNS, samples_per_pixel=1,
                                     bits_allocated=8, bits_stored=8, pixel_representation=0,
                                     photometric_interpretation="MONOCHROME2", number_of_frames=1)


def with_jpeg_size(frame: bytes, rows: int, columns: int, marker: bytes = b"\xff\xc0") -> bytes:
    """The frame header (SOF0, or SOF55 with ``marker=b"\\xff\\xf7"``) set to ``rows`` x ``columns``."""
    at = frame.index(marker)
    return frame[: at + 5] + struct.pack(">HH", rows, columns) + frame[at + 9 :]


def with_j2k_size(frame: bytes, rows: int, columns: int) -> bytes:
    """The SIZ Xsiz/Ysiz (offsets kept at 0) set, tiles as large as the image."""
    at = frame.index(b"\xff\x4f\xff\x51") + 4
    siz = bytearray(frame)
    struct.pack_into(">II", siz, at + 4, columns, rows)
    struct.pack_into(">II", siz, at + 20, columns, rows)  # one tile
    return bytes(siz)


def with_rle_segments(frame: bytes, count: int) -> bytes:
    return struct.pack("<I", count) + frame[4:]


# name -> (transfer syntax, frame builder, frame patcher producing the bomb)
STREAM_BOMBS = {
    "jpeg_65535": (JPEGBaseline8Bit, jpeg_frame, lambda f: with_jpeg_size(f, 65535, 65535)),
    "jpegls_65535": (JPEGLSLossless, jpegls_frame, lambda f: with_jpeg_size(f, 65535, 65535, b"\xff\xf7")),
    "j2k_60000": (JPEG2000Lossless, j2k_frame, lambda f: with_j2k_size(f, 60000, 60000)),
    "htj2k_60000": (HTJ2KLossless, htj2k_frame, lambda f: with_j2k_size(f, 60000, 60000)),
    "rle_15_segments": (RLELossless, rle_frame, lambda f: with_rle_segments(f, 15)),
}


def write_stream_bomb(folder: Path, name: str) -> Path:
    syntax, build, patch = STREAM_BOMBS[name]
    return _save_encapsulated(Path(folder) / f"{name}.dcm", syntax, patch(build()))


def write_stream_good(folder: Path, name: str) -> Path:
    """The same file without the patch: must still decode (the check does not refuse valid files)."""
    syntax, build, _ = STREAM_BOMBS[name]
    return _save_encapsulated(Path(folder) / f"{name}-good.dcm", syntax, build())


def write_deflate_bomb(path: Path, inflated_bytes: int) -> Path:
    """A deflated DX whose body inflates to about ``inflated_bytes`` (zeros), built in O(1 MiB) time:
    one full-flushed deflate block of 1 MiB of zeros repeated (each is independent of the others)."""
    ds = small_dx(DeflatedExplicitVRLittleEndian)
    ds.PixelData = np.zeros((ROWS, COLUMNS), np.uint8).tobytes()
    body = io.BytesIO()
    ds.save_as(body, enforce_file_format=True)
    plain = bytearray(body.getvalue())
    # the part after the file meta, written by pydicom deflated: rebuild it from its plain form
    meta_end = 132 + 12 + struct.unpack("<I", plain[140:144])[0]
    header = bytes(plain[:meta_end])
    dataset = bytearray(zlib.decompress(bytes(plain[meta_end:]), -zlib.MAX_WBITS))
    blocks = max(1, inflated_bytes >> 20)
    pixels = ROWS * COLUMNS  # Pixel Data is the last element: its length covers the zeros that follow
    assert dataset[-pixels - 12 : -pixels - 8] == b"\xe0\x7f\x10\x00"
    struct.pack_into("<I", dataset, len(dataset) - pixels - 4, pixels + (blocks << 20))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = compressor.compress(bytes(dataset)) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.flush()
    with open(path, "wb") as handle:
        handle.write(header + first)
        for _ in range(blocks):
            handle.write(block)
        handle.write(tail)
    return Path(path)


def write_native(path: Path, rows: int, columns: int, frames: int = 1, modality: str = "DX", z: float | None = None) -> Path:
    """A 16-bit native DX (or, with ``z``, a CT slice of one series) of random values."""
    ds = small_dx(bits=16, rows=rows, columns=columns)
    ds.Modality = modality
    if frames > 1:
        ds.NumberOfFrames = frames
    if z is not None:  # a CT slice of one series
        ds.SeriesInstanceUID = ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.13"
        ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0, 0, z]
        ds.PixelSpacing, ds.SliceThickness, ds.RescaleSlope, ds.RescaleIntercept = [0.5, 0.5], 1.0, 1, -1024
    ds.PixelData = np.random.default_rng(0).integers(0, 4000, (frames, rows, columns), dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


#: A Storage SCU (run as ``python -c STREAMED_STORE_SENDER PORT FOLDER SIZE,SIZE,...``): writes one
#: data set of each size in bytes and C-STOREs them over one association, streamed from the file in
#: P-DATA PDUs of the node's maximum length; prints {"statuses": [...], "pdu": N} (None: no reply).
STREAMED_STORE_SENDER = r"""
import json, sys
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from pynetdicom import AE, _config
from pynetdicom.sop_class import Verification

port, folder, sizes = int(sys.argv[1]), sys.argv[2], [int(s) for s in sys.argv[3].split(",")]
_config.STORE_SEND_CHUNKED_DATASET = True  # streamed from the file in PDUs of the node's maximum length


def write(index, nbytes):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = "1.2.3.4", "1.2.3.4.5", "OT"
    rows, frames = (nbytes // 1024, 1) if nbytes < 64 << 20 else (1024, nbytes >> 20)  # rows of 512 16-bit values
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, 512, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = bytes(rows * 1024 * frames)
    path = f"{folder}/{index}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


paths = [write(i, n) for i, n in enumerate(sizes)]
ae = AE(ae_title="LEGIT")
ae.add_requested_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
ae.add_requested_context(Verification)
ae.acse_timeout = ae.network_timeout = 60
ae.dimse_timeout = 8  # pynetdicom waits this long for a reply on an association the node aborted mid-send
assoc = ae.associate("127.0.0.1", port, ae_title="MONAI_FRACTURE")
statuses = []
for path in paths:
    if not assoc.is_established:
        statuses.append(None)
        continue
    status = assoc.send_c_store(path)
    statuses.append(int(status.Status) if status and "Status" in status else None)
pdu = assoc.acceptor.maximum_length
if assoc.is_established:
    assoc.release()
print(json.dumps({"statuses": statuses, "pdu": pdu}))
"""
