"""Mutated real DICOM files: only ImageReadError may ever escape read_image, and nothing hangs.

Bounded for CI: derandomised, no example database, about 30 s in all on 2 cores.
"""

from __future__ import annotations

import io
import re
import struct
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from monai_fracture.io import ImageReadError, read_image

SEEDS = [
    "pydicom_test_files/CT_small.dcm",  # explicit VR LE, signed CT
    "pydicom_test_files/MR_small_bigendian.dcm",  # big endian
    "pydicom_test_files/MR_small_RLE.dcm",  # RLE
    "pydicom_test_files/MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS
    "pydicom_test_files/MR_small_jp2klossless.dcm",  # JPEG 2000
    "pydicom_test_files/SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR colour
    "pydicom_test_files/dicomdirtests/77654033/CR1/6154",  # CR MONOCHROME1
    "pydicom_test_files/ExplVR_LitEndNoMeta.dcm",  # no file meta (RTPLAN)
    "pydicom_test_files/image_dfl.dcm",  # deflated
    "highdicom_testdata/dx_image.dcm",  # DX with window
    "dcmqi_ct3slice/23x38x3/image/IMG0001.dcm",
]
# Little- and big-endian headers of Rows, Columns, Bits Allocated, Number of Frames, SOP Instance UID,
# Pixel Data and the items of encapsulated pixel data.
_TAGS = [(0x0028, 0x0010), (0x0028, 0x0011), (0x0028, 0x0100), (0x0028, 0x0008), (0x0008, 0x0018), (0x7FE0, 0x0010), (0xFFFE, 0xE000)]
TAG_PATTERN = re.compile(
    b"|".join(re.escape(struct.pack(endian + "HH", group, element)) for group, element in _TAGS for endian in "<>")
)
HOSTILE_TAGS = {
    "Rows": [0, 1, 65535, 2**31 - 1],
    "Columns": [0, 1, 65535],
    "NumberOfFrames": ["0", "-1", "1000000000", "1A", ""],
    "BitsAllocated": [0, 1, 3, 7, 64, 65535],
    "BitsStored": [0, 17, 33, 255],
    "HighBit": [0, 40],
    "SamplesPerPixel": [0, 2, 4, 255],
    "PixelRepresentation": [2, 255],
    "PhotometricInterpretation": ["", "CMYK", "MONOCHROME3", "PALETTE COLOR", "RGB"],
    "PlanarConfiguration": [1, 7],
    "WindowCenter": ["nan", "1e308", "-"],
    "WindowWidth": ["0", "-5", "inf"],
    "RescaleSlope": ["0", "nan", "1e308"],
    "RescaleIntercept": ["inf", "x"],
    "VOILUTFunction": ["WEIRD", ""],
    "PixelSpacing": [["0", "0"], ["-1", "1"], ["nan", "1"]],
    "ImagerPixelSpacing": [["1e400", "1"]],
}


@pytest.fixture(scope="module")
def seeds(dicom_corpus: Path) -> list[bytes]:
    return [(dicom_corpus / name).read_bytes() for name in SEEDS]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "input.dcm"


def read_only_our_error(path: Path, data: bytes) -> float:
    """Write, read, and check the outcome; returns the seconds the read took."""
    path.write_bytes(data)
    start = time.perf_counter()
    try:
        values, meta = read_image(path)
    except ImageReadError as exc:
        assert exc.path == str(path) and exc.reason.value in str(exc)
    else:
        assert isinstance(values, np.ndarray) and values.dtype == np.float32 and values.size > 0
        assert np.isfinite(values).all()
        assert isinstance(meta, dict) and meta["format"] == "dicom"
    return time.perf_counter() - start


# No shrinking: a failure is reported as found, so a slow failing example cannot balloon the run.
FUZZ = settings(max_examples=800, deadline=None, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.reuse, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.timeout(120)
@FUZZ
@given(data=st.data())
def test_byte_level_mutations(seeds: list[bytes], scratch: Path, data: st.DataObject) -> None:
    original = seeds[data.draw(st.integers(0, len(seeds) - 1), label="seed")]
    mutated = bytearray(original)
    kind = data.draw(st.sampled_from(["truncate", "flip", "length", "splice"]), label="kind")
    if kind == "truncate":
        del mutated[data.draw(st.integers(0, len(mutated) - 1), label="cut") :]
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 16), label="flips")):
            at = data.draw(st.integers(0, len(mutated) - 1))
            mutated[at] ^= data.draw(st.integers(1, 255))
    elif kind == "length":
        # overwrite the length field of a real element header (explicit or implicit VR)
        hits = [m.start() for m in TAG_PATTERN.finditer(bytes(mutated))][:40]
        if hits:
            at = data.draw(st.sampled_from(hits)) + 4
            value = data.draw(st.sampled_from([0, 1, 3, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 0xFFFFFFF0]))
            if data.draw(st.booleans(), label="short form"):  # explicit VR: 2-byte length after the VR
                mutated[at + 2 : at + 4] = struct.pack("<H", value & 0xFFFF)
            else:  # implicit VR (or a 4-byte field): length right after the tag
                mutated[at : at + 4] = struct.pack("<I", value)
    else:
        start = data.draw(st.integers(0, len(mutated) - 1))
        mutated[start : start + 64] = data.draw(st.binary(min_size=0, max_size=64))
    assert read_only_our_error(scratch, bytes(mutated)) < 20


@pytest.mark.timeout(120)
@FUZZ
@given(data=st.data())
def test_hostile_tag_values(seeds: list[bytes], scratch: Path, data: st.DataObject) -> None:
    original = seeds[data.draw(st.integers(0, len(seeds) - 1), label="seed")]
    ds = pydicom.dcmread(io.BytesIO(original), force=True)
    for keyword in data.draw(st.lists(st.sampled_from(sorted(HOSTILE_TAGS)), min_size=1, max_size=3, unique=True)):
        value = data.draw(st.sampled_from(HOSTILE_TAGS[keyword]), label=keyword)
        try:
            setattr(ds, keyword, value)
        except (ValueError, TypeError, OverflowError):
            continue  # pydicom refuses to even hold the value: nothing to write
    buffer = io.BytesIO()
    try:
        ds.save_as(buffer, enforce_file_format=False)
    except Exception:  # a value pydicom cannot encode: write it raw instead
        return
    assert read_only_our_error(scratch, buffer.getvalue()) < 20
