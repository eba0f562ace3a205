"""HTJ2K (High-Throughput JPEG 2000) DICOM decodes exactly; the corpus has none, so one is encoded here."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import HTJ2KLossless, HTJ2KLosslessRPCL

from monai_fracture.io import read_dicom
from helpers.dicom_files import dx_header

imagecodecs = pytest.importorskip("imagecodecs", reason="imagecodecs (the HTJ2K encoder for this test) not installed")


def _htj2k_dx(path, pixels: np.ndarray, syntax) -> None:
    ds = dx_header(syntax, *pixels.shape, bits_allocated=16, bits_stored=12, patient_id="HTJ2K-TEST")
    ds.ImagerPixelSpacing = [0.15, 0.15]
    ds.PixelData = encapsulate([imagecodecs.htj2k_encode(pixels, level=0)])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("syntax", [HTJ2KLossless, HTJ2KLosslessRPCL])
def test_htj2k_lossless_decodes_to_the_encoded_pixels(tmp_path, syntax):
    rng = np.random.default_rng(0)
    pixels = (rng.integers(0, 4096, (96, 80)) // 16 * 16).astype(np.uint16)
    pixels[20:40, 10:70] = 4000  # a bright "bone" block
    path = tmp_path / "htj2k.dcm"
    _htj2k_dx(path, pixels, syntax)
    image, meta = read_dicom(path)
    assert image.dtype == np.float32 and image.shape == pixels.shape
    assert meta["presentation_ready"] is False  # no window in the file: modality values come back
    np.testing.assert_array_equal(image, pixels.astype(np.float32))
    assert meta["spacing"] == pytest.approx((0.15, 0.15))
