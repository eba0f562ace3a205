"""DICOM intensity rules on files generated here with pydicom, where every expected value is known."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.pixels import apply_modality_lut, apply_windowing
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, UID, generate_uid

from monai_fracture.io import ImageReadError, ReadFailure, read_dicom, read_image, scan_dicom_headers
from monai_fracture.io.dicom_pixels import _rescale, _voi_lut_depth, _window, window_to_unit
from helpers.needs import missing

pytestmark = pytest.mark.timeout(60)

DX_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_CLASS = "1.2.840.10008.5.1.4.1.1.2.1"
STORED = np.array([[0, 100, 900, 1000], [1100, 2000, 3000, 4095]], dtype=np.uint16)


def make_image(
    stored: np.ndarray = STORED,
    *,
    modality: str = "DX",
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    signed: bool = False,
    sop_class: str = DX_CLASS,
    **tags: object,
) -> Dataset:
    """A minimal, valid single-frame grey image with the given stored values and extra tags."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "P1"
    ds.Modality = modality
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = stored.astype(np.int16 if signed else np.uint16).tobytes()
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def modality_lut_image(descriptor: list[int], entries: list[int]) -> Dataset:
    """An OT image whose Modality LUT Sequence holds ``entries`` (US) under LUT Descriptor ``descriptor``."""
    item = Dataset()
    item.LUTDescriptor = descriptor
    item.ModalityLUTType = "US"
    item.LUTData = entries
    ds = make_image(modality="OT", ModalityLUTSequence=[item])
    ds.ModalityLUTSequence[0]["LUTData"].VR = "US"
    return ds


def refusal(path: Path, reason: ReadFailure) -> str:
    """Read ``path`` expecting an ImageReadError that names the file and ``reason``; its detail."""
    with pytest.raises(ImageReadError) as raised:
        read_dicom(path)
    assert (raised.value.path, raised.value.reason) == (str(path), reason)
    return raised.value.detail


def linear(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 with output range [0, 1]."""
    return np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0)


def test_rescale_and_linear_window_give_exact_presentation_values(tmp_path: Path) -> None:
    ds = make_image(RescaleSlope=2, RescaleIntercept=-100, WindowCenter=1000, WindowWidth=2000)
    values, meta = read_dicom(save(ds, tmp_path / "dx.dcm"))
    modality_values = STORED.astype(np.float64) * 2 - 100
    expected = linear(modality_values, 1000, 2000)
    assert values.dtype == np.float32 and values.shape == STORED.shape
    np.testing.assert_allclose(values, expected, atol=1e-6)
    assert values[0, 0] == 0.0 and values[1, 3] == 1.0  # below / above the window
    assert values[0, 3] == pytest.approx((1900 - 999.5) / 1999 + 0.5, abs=1e-6)
    # the same numbers as pydicom's own LUT functions, rescaled from its output range to [0, 1]
    reference = apply_windowing(apply_modality_lut(STORED, ds), ds)
    y_min, y_max = -100.0, 4095 * 2 - 100.0
    np.testing.assert_allclose(values, (reference - y_min) / (y_max - y_min), atol=1e-6)
    assert meta["window"] == (1000.0, 2000.0)
    assert meta["presentation_ready"] is True and meta["inverted"] is False
    assert meta["modality"] == "DX" and meta["patient_id"] == "P1"


def test_linear_exact_window(tmp_path: Path) -> None:
    ds = make_image(WindowCenter=1000, WindowWidth=1000, VOILUTFunction="LINEAR_EXACT")
    values, meta = read_dicom(save(ds, tmp_path / "exact.dcm"))
    expected = np.clip((STORED - 1000.0) / 1000.0 + 0.5, 0, 1)
    np.testing.assert_allclose(values, expected, atol=1e-6)
    assert values[0, 3] == pytest.approx(0.5) and values[1, 0] == pytest.approx(0.6)
    assert meta["voi"] == "LINEAR_EXACT"


def test_sigmoid_window(tmp_path: Path) -> None:
    ds = make_image(WindowCenter=2000, WindowWidth=1000, VOILUTFunction="SIGMOID")
    values, _ = read_dicom(save(ds, tmp_path / "sigmoid.dcm"))
    expected = 1.0 / (1.0 + np.exp(-4.0 * (STORED - 2000.0) / 1000.0))
    np.testing.assert_allclose(values, expected, atol=1e-6)
    assert values[1, 1] == pytest.approx(0.5)  # at the centre
    reference = apply_windowing(STORED.astype(np.float64), ds)
    np.testing.assert_allclose(values, reference / (2**12 - 1), atol=1e-6)


def test_monochrome1_is_inverted_after_the_window(tmp_path: Path) -> None:
    ds = make_image(photometric="MONOCHROME1", WindowCenter=1000, WindowWidth=2000, PresentationLUTShape="INVERSE")
    values, meta = read_dicom(save(ds, tmp_path / "mono1.dcm"))
    np.testing.assert_allclose(values, 1.0 - linear(STORED.astype(np.float64), 1000, 2000), atol=1e-6)
    assert meta["inverted"] is True and meta["photometric"] == "MONOCHROME1"
    assert values[0, 0] == 1.0  # the lowest stored value is the brightest


def test_monochrome1_without_window_is_mirrored_in_its_value_range(tmp_path: Path) -> None:
    ds = make_image(photometric="MONOCHROME1", modality="CR")
    values, meta = read_dicom(save(ds, tmp_path / "cr.dcm"))
    np.testing.assert_array_equal(values, 4095.0 - STORED)
    assert meta["presentation_ready"] is False and meta["inverted"] is True and meta["window"] is None


def test_signed_monochrome1_without_window_is_mirrored_in_the_signed_range(tmp_path: Path) -> None:
    """Signed 12-bit: the range is [-2048, 2047], so x maps to -2048 + 2047 - x (not 2047 - x)."""
    stored = np.array([[-2048, -1, 0], [1, 1000, 2047]], dtype=np.int16)
    ds = make_image(stored, photometric="MONOCHROME1", modality="CR", signed=True)
    values, meta = read_dicom(save(ds, tmp_path / "signed.dcm"))
    np.testing.assert_array_equal(values, -1.0 - stored.astype(np.float64))
    assert values[0, 0] == 2047.0 and values[1, 2] == -2048.0  # the ends swap
    assert meta["value_range"] == (-2048.0, 2047.0) and meta["inverted"] is True


@pytest.mark.parametrize("slope, intercept", [(2.0, -100.0), (-0.5, 30.0)])
def test_rescaled_monochrome1_without_window_is_mirrored_in_the_rescaled_range(tmp_path: Path, slope: float,
                                                                                intercept: float) -> None:
    ds = make_image(photometric="MONOCHROME1", modality="CR", RescaleSlope=slope, RescaleIntercept=intercept)
    values, meta = read_dicom(save(ds, tmp_path / "rescaled.dcm"))
    modality_values = apply_modality_lut(STORED, ds).astype(np.float64)
    lo, hi = sorted((intercept, 4095 * slope + intercept))  # the 12-bit range through the rescale
    np.testing.assert_allclose(values, lo + hi - modality_values, atol=1e-4)
    assert meta["value_range"] == (lo, hi) and meta["inverted"] is True and meta["presentation_ready"] is False


def test_presentation_lut_shape_inverse_on_monochrome2_inverts(tmp_path: Path) -> None:
    ds = make_image(WindowCenter=1000, WindowWidth=2000, PresentationLUTShape="INVERSE")
    values, meta = read_dicom(save(ds, tmp_path / "inverse.dcm"))
    np.testing.assert_allclose(values, 1.0 - linear(STORED.astype(np.float64), 1000, 2000), atol=1e-6)
    assert meta["inverted"] is True


def test_signed_ct_gives_hounsfield_units_and_ignores_the_window(tmp_path: Path) -> None:
    stored = np.array([[-2000, -1024, 0], [24, 1000, 2047]], dtype=np.int16)
    ds = make_image(stored, modality="CT", sop_class=CT_CLASS, signed=True, RescaleSlope=1, RescaleIntercept=-1024,
                    WindowCenter=40, WindowWidth=400, PixelSpacing=[0.5, 0.7])
    values, meta = read_dicom(save(ds, tmp_path / "ct.dcm"))
    np.testing.assert_array_equal(values, stored.astype(np.float32) - 1024)
    assert meta["presentation_ready"] is False and meta["window"] is None
    assert meta["spacing"] == (0.5, 0.7) and meta["spacing_source"] == "PixelSpacing"


def test_bits_stored_below_bits_allocated_masks_unused_high_bits(tmp_path: Path) -> None:
    ds = make_image(modality="OT")
    ds.PixelData = (STORED | 0xF000).astype(np.uint16).tobytes()  # garbage above bit 11
    values, _ = read_dicom(save(ds, tmp_path / "garbage_bits.dcm"))
    np.testing.assert_array_equal(values, STORED.astype(np.float32))


def test_signed_12_bit_values_are_sign_extended(tmp_path: Path) -> None:
    stored = np.array([[-2048, -1, 0, 2047]], dtype=np.int16)
    ds = make_image(stored, modality="CT", sop_class=CT_CLASS, signed=True)
    ds.PixelData = (stored.astype(np.int32) & 0x0FFF).astype(np.uint16).tobytes()  # 12-bit two's complement
    values, _ = read_dicom(save(ds, tmp_path / "signed12.dcm"))
    np.testing.assert_array_equal(values, stored.astype(np.float32))


def test_big_endian_file(tmp_path: Path) -> None:
    ds = make_image(modality="CT", sop_class=CT_CLASS, RescaleSlope=1, RescaleIntercept=-1000)
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    ds.PixelData = STORED.astype(">u2").tobytes()
    path = tmp_path / "big.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=True, little_endian=False, implicit_vr=False)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    values, meta = read_dicom(path)
    np.testing.assert_array_equal(values, STORED.astype(np.float32) - 1000)
    assert meta["transfer_syntax"] == ExplicitVRBigEndian


def test_file_without_preamble_or_file_meta(tmp_path: Path) -> None:
    ds = make_image(WindowCenter=1000, WindowWidth=2000)
    del ds.file_meta
    stream = DicomBytesIO()
    stream.is_little_endian, stream.is_implicit_VR = True, True
    write_dataset(stream, ds)
    path = tmp_path / "bare"
    path.write_bytes(stream.getvalue())
    assert path.read_bytes()[128:132] != b"DICM"
    values, meta = read_image(path)
    np.testing.assert_allclose(values, linear(STORED.astype(np.float64), 1000, 2000), atol=1e-6)
    assert meta["transfer_syntax"] == "1.2.840.10008.1.2"


def test_voi_lut_sequence_is_preferred_to_the_window(tmp_path: Path) -> None:
    lut = (np.sqrt(np.arange(4096) / 4095.0) * 65535).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.LUTData = lut.tolist()
    ds = make_image(VOILUTSequence=[item], WindowCenter=10, WindowWidth=10)
    ds.VOILUTSequence[0]["LUTData"].VR = "US"
    values, meta = read_dicom(save(ds, tmp_path / "voilut.dcm"))
    np.testing.assert_allclose(values, lut[STORED] / 65535.0, atol=1e-6)
    assert meta["presentation_ready"] is True and meta["voi"] == "VOILUTSequence"


def test_modality_lut_sequence(tmp_path: Path) -> None:
    table = ((4095 - np.arange(4096)) * 3).astype(np.uint16)  # a decreasing modality LUT
    ds = modality_lut_image([4096, 0, 16], table.tolist())  # PS3.3 C.11.1.1.1: 8 or 16 bits per entry
    values, _ = read_dicom(save(ds, tmp_path / "modlut.dcm"))
    np.testing.assert_array_equal(values, table[STORED].astype(np.float32))


def test_rgb_becomes_bt601_grey(tmp_path: Path) -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]], dtype=np.uint8)
    ds = make_image(modality="OT")
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.Rows, ds.Columns = 2, 2
    ds.PixelData = rgb.tobytes()
    values, meta = read_dicom(save(ds, tmp_path / "rgb.dcm"))
    np.testing.assert_allclose(values, [[0.299, 0.587], [0.114, 1.0]], atol=1e-6)
    assert meta["presentation_ready"] is True


def test_multiframe_projection_gives_the_first_frame(tmp_path: Path) -> None:
    frames = np.stack([STORED, 4095 - STORED, STORED // 2])
    ds = make_image(frames, modality="XA", NumberOfFrames=3)
    values, meta = read_dicom(save(ds, tmp_path / "xa.dcm"))
    np.testing.assert_array_equal(values, STORED.astype(np.float32))
    assert meta["frame_rule"] == "first_frame" and meta["num_frames"] == 3


def _plane(position: list[float]) -> Dataset:
    item, inner = Dataset(), Dataset()
    inner.ImagePositionPatient = position
    item.PlanePositionSequence = [inner]
    return item


def test_enhanced_ct_frames_become_a_sorted_volume(tmp_path: Path) -> None:
    z_of_frame = [10.0, 0.0, 5.0, 15.0]  # stored out of order
    frames = np.stack([np.full((3, 4), z, dtype=np.int16) for z in z_of_frame])
    ds = make_image(frames, modality="CT", sop_class=ENHANCED_CT_CLASS, signed=True, NumberOfFrames=4)
    shared = Dataset()
    orientation, measures, rescale = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing, measures.SliceThickness = [0.8, 0.6], 5
    rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = 1, -1000, "HU"
    shared.PlaneOrientationSequence = [orientation]
    shared.PixelMeasuresSequence = [measures]
    shared.PixelValueTransformationSequence = [rescale]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = [_plane([0.0, 0.0, z]) for z in z_of_frame]
    values, meta = read_dicom(save(ds, tmp_path / "enhanced.dcm"))
    assert values.shape == (4, 3, 4) and meta["frame_rule"] == "volume"
    np.testing.assert_array_equal(values[:, 0, 0], np.array([0, 5, 10, 15], dtype=np.float32) - 1000)
    assert meta["spacing"] == pytest.approx((5.0, 0.8, 0.6))
    np.testing.assert_allclose(meta["affine"][:3, 0], [0, 0, 5])


def test_undecodable_transfer_syntax_is_named(tmp_path: Path) -> None:
    ds = make_image()
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2: no decoder exists
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    with pytest.raises(ImageReadError) as err:
        read_dicom(save(ds, tmp_path / "mpeg2.dcm"))
    assert err.value.reason is ReadFailure.UNDECODABLE and "MPEG2" in err.value.detail


@pytest.mark.parametrize(
    ("stream", "reasons"),
    [
        (b"\xff\xd8\xff\xe0" + b"\x13" * 200, {ReadFailure.TRUNCATED, ReadFailure.UNDECODABLE}),  # stops mid-stream
        (b"\xff\xd8\xff\xdb\x00\x02\xff\xd9", {ReadFailure.UNDECODABLE}),  # complete but no image in it
    ],
)
def test_corrupt_jpeg_stream_names_the_transfer_syntax(tmp_path: Path, stream: bytes, reasons: set) -> None:
    ds = make_image()
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.50")
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    with pytest.raises(ImageReadError) as err:
        read_dicom(save(ds, tmp_path / "badjpeg.dcm"))
    assert err.value.reason in reasons and "JPEG Baseline" in err.value.detail


def test_truncated_native_pixel_data(tmp_path: Path) -> None:
    ds = make_image()
    ds.PixelData = ds.PixelData[:-4]
    with pytest.raises(ImageReadError) as err:
        read_dicom(save(ds, tmp_path / "short.dcm"))
    assert err.value.reason is ReadFailure.TRUNCATED
    assert "short.dcm" in str(err.value)


@pytest.mark.parametrize(
    ("tags", "reason"),
    [
        ({"Rows": 60000, "Columns": 60000}, ReadFailure.UNSUPPORTED_GEOMETRY),
        ({"Rows": 0}, ReadFailure.UNSUPPORTED_GEOMETRY),
        ({"BitsAllocated": 0}, ReadFailure.INVALID_VALUE),
        ({"BitsStored": 17}, ReadFailure.INVALID_VALUE),
        ({"SamplesPerPixel": 2}, ReadFailure.INVALID_VALUE),
        ({"PixelRepresentation": 5}, ReadFailure.INVALID_VALUE),
        ({"PhotometricInterpretation": "CMYK"}, ReadFailure.INVALID_VALUE),
        ({"NumberOfFrames": 1_000_000_000}, ReadFailure.TRUNCATED),  # first frame read: header promises too much
        ({"NumberOfFrames": 0}, ReadFailure.INVALID_VALUE),
        ({"RescaleSlope": 0, "RescaleIntercept": 0}, ReadFailure.INVALID_VALUE),
    ],
)
def test_hostile_header_values_are_refused_with_a_reason(tmp_path: Path, tags: dict, reason: ReadFailure) -> None:
    ds = make_image(**tags)
    with pytest.raises(ImageReadError) as err:
        read_dicom(save(ds, tmp_path / "hostile.dcm"))
    assert err.value.reason is reason, err.value


def test_huge_enhanced_volume_is_refused_before_allocation(tmp_path: Path) -> None:
    ds = make_image(modality="CT", sop_class=ENHANCED_CT_CLASS, NumberOfFrames=100_000, Rows=2048, Columns=2048)
    with pytest.raises(ImageReadError) as err:
        read_dicom(save(ds, tmp_path / "huge.dcm"))
    assert err.value.reason in (ReadFailure.UNSUPPORTED_GEOMETRY, ReadFailure.TRUNCATED)


def test_invalid_window_is_ignored_not_fatal(tmp_path: Path) -> None:
    ds = make_image(WindowCenter=100, WindowWidth=0)
    values, meta = read_dicom(save(ds, tmp_path / "nowindow.dcm"))
    np.testing.assert_array_equal(values, STORED.astype(np.float32))
    assert meta["presentation_ready"] is False and meta["window"] is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"hello, this is a text file\n" * 20, ReadFailure.NOT_DICOM),
        (bytes(range(256)) * 4, ReadFailure.NOT_DICOM),
        (b"\x00" * 128 + b"DICM" + b"\xff" * 300, None),  # preamble, then garbage: any of our reasons
    ],
)
def test_non_dicom_content_is_rejected(tmp_path: Path, content: bytes, reason: ReadFailure | None) -> None:
    path = tmp_path / "input.dcm"
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as err:
        read_image(path)
    if reason is not None:
        assert err.value.reason is reason


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError) as err:
        read_image(tmp_path / "absent.dcm")
    assert err.value.reason is ReadFailure.NOT_FOUND and "absent.dcm" in str(err.value)


def test_non_image_objects(tmp_path: Path) -> None:
    sr = make_image(modality="SR", sop_class="1.2.840.10008.5.1.4.1.1.88.33")
    del sr.PixelData
    no_pixels = make_image(modality="CT", sop_class=CT_CLASS)
    del no_pixels.PixelData
    for ds, name, reason in ((sr, "sr.dcm", ReadFailure.NOT_AN_IMAGE), (no_pixels, "ct.dcm", ReadFailure.NO_PIXEL_DATA)):
        with pytest.raises(ImageReadError) as err:
            read_dicom(save(ds, tmp_path / name))
        assert err.value.reason is reason
    headers = {Path(e["path"]).name: e for e in scan_dicom_headers(tmp_path)}
    assert headers["sr.dcm"]["reason"] == "not_an_image" and headers["ct.dcm"]["reason"] == "no_pixel_data"


def test_keyboard_interrupt_is_not_swallowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import monai_fracture.io.dicom_pixels as dicom_pixels

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(dicom_pixels, "pixel_array", interrupted)
    with pytest.raises(KeyboardInterrupt):
        read_dicom(save(make_image(), tmp_path / "dx.dcm"))
    monkeypatch.setattr(dicom_pixels, "pixel_array", lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(MemoryError):
        read_dicom(save(make_image(), tmp_path / "dx2.dcm"))


def test_2048_square_dx_reads_in_tens_of_milliseconds(tmp_path: Path) -> None:
    import time

    rng = np.random.default_rng(0)
    stored = rng.integers(0, 4096, size=(2048, 2048), dtype=np.uint16)
    path = save(make_image(stored, photometric="MONOCHROME1", WindowCenter=2048, WindowWidth=4096), tmp_path / "big.dcm")
    read_dicom(path)
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        values, _ = read_dicom(path)
        timings.append(time.perf_counter() - start)
    assert values.dtype == np.float32
    assert min(timings) < 0.1, f"best of 5: {min(timings) * 1000:.1f} ms"
    assert not math.isnan(float(values.mean()))


def test_window_outside_the_data_range_is_not_applied(tmp_path: Path) -> None:
    """A real DX in the corpus has such a window; applying it would give a blank image."""
    ds = make_image(WindowCenter=20000, WindowWidth=1000, RescaleSlope=1, RescaleIntercept=0)
    values, meta = read_dicom(save(ds, tmp_path / "offwindow.dcm"))
    np.testing.assert_array_equal(values, STORED.astype(np.float32))
    assert meta["presentation_ready"] is False and meta["window"] is None
    assert meta["window_ignored"] == (20000.0, 1000.0)


# -- speed-ups that must not change a value ----------------------------------------------------


def _voi_item(first: int, entries: int, depth: int = 12) -> Dataset:
    x = np.arange(entries, dtype=np.float64)
    table = np.rint((2**depth - 1) / (1.0 + np.exp(-(x - entries / 2) / (entries / 8)))).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [entries, first, depth]
    item.add_new(0x00283006, "OW", table.astype("<u2").tobytes())
    return item


@pytest.mark.parametrize(
    ("signed", "photometric", "rescale"),
    [(False, "MONOCHROME2", None), (False, "MONOCHROME1", (2.0, -300.0)), (True, "MONOCHROME2", (1.0, 0.0))],
)
def test_voi_lut_by_table_equals_the_per_pixel_chain(tmp_path: Path, signed: bool, photometric: str, rescale) -> None:
    """Large VOI-LUT images are looked up once per stored value: the result must be identical."""
    from monai_fracture.io.dicom_pixels import _grey_mono, _table_worthwhile, validate_layout

    rng = np.random.default_rng(1)
    low = -1500 if signed else 200  # a stored minimum away from 0 exercises the table offset
    stored = rng.integers(low, low + 3000, size=(300, 260)).astype(np.int16 if signed else np.uint16)
    tags = {} if rescale is None else {"RescaleSlope": rescale[0], "RescaleIntercept": rescale[1]}
    first = -1000 if signed else 100
    ds = make_image(stored, photometric=photometric, signed=signed, VOILUTSequence=[_voi_item(first, 4096)], **tags)
    values, meta = read_dicom(save(ds, tmp_path / "voi.dcm"))
    assert values.dtype == np.float32 and meta["voi"] == "VOILUTSequence"
    parsed = pydicom.dcmread(tmp_path / "voi.dcm")
    assert _table_worthwhile(parsed.pixel_array, parsed, "DX")
    reference, _ = _grey_mono(parsed.pixel_array, parsed, validate_layout(parsed, "x"), "DX", "x", 0,
                              {"window": None, "presentation_ready": False, "inverted": False})
    np.testing.assert_array_equal(values, reference)
    # and the standard's chain in float64: Modality (Rescale) -> VOI LUT -> inversion
    slope, intercept = rescale or (1.0, 0.0)
    modality_values = np.rint(stored.astype(np.float64) * slope + intercept).astype(np.int64)
    table = np.frombuffer(ds.VOILUTSequence[0].LUTData, "<u2").astype(np.float64)
    expected = table[np.clip(modality_values - first, 0, 4095)] / 4095.0
    if photometric == "MONOCHROME1":
        expected = 1.0 - expected
    np.testing.assert_allclose(values, expected, atol=1e-6)


@pytest.mark.parametrize(("stored", "bits", "signed"), [
    (np.array([[0, 100], [4095, 7]]), 12, False),  # high bits clean: no correction pass
    (np.array([[0xF000, 0x8001], [0x0FFF, 7]]), 12, False),  # garbage above bit 11
    (np.array([[-2048, -1], [2047, 0]]), 12, True),  # sign extended already
    (np.array([[0x0800, 0x0FFF], [0x07FF, 0]]), 12, True),  # 12-bit two's complement, high bits 0
])
def test_native_decode_without_a_copy_keeps_pydicoms_values(tmp_path: Path, stored, bits, signed) -> None:
    """Native pixels are read as a view and corrected only when needed: same values as pydicom."""
    ds = make_image(np.zeros((2, 2)), modality="OT", bits_stored=bits, signed=signed)
    ds.PixelData = stored.astype(np.int64).astype(np.uint16).tobytes()
    path = save(ds, tmp_path / "bits.dcm")
    values, _ = read_dicom(path)
    expected = pydicom.dcmread(path).pixel_array  # copies and shifts every pixel
    np.testing.assert_array_equal(values, expected.astype(np.float32))


def test_jpegls_decodes_with_the_preferred_plugin_to_the_same_pixels(tmp_path: Path) -> None:
    from pydicom.pixels import get_decoder, pixel_array
    from pydicom.uid import JPEGLSLossless

    from monai_fracture.io.dicom_pixels import PREFERRED_PLUGINS

    decoder = get_decoder(JPEGLSLossless)
    if not decoder.is_available:
        missing("no JPEG-LS decoder installed (pyjpegls)")
    rng = np.random.default_rng(2)
    stored = rng.integers(0, 4096, size=(96, 80)).astype(np.uint16)
    ds = make_image(stored, WindowCenter=2000, WindowWidth=3000)
    ds.compress(JPEGLSLossless, generate_instance_uid=False)
    path = save(ds, tmp_path / "jls.dcm")
    values, meta = read_dicom(path)
    expected = np.clip((stored - (2000 - 0.5)) / 2999 + 0.5, 0, 1)
    np.testing.assert_allclose(values, expected, atol=1e-6)
    assert PREFERRED_PLUGINS[JPEGLSLossless] in decoder.available_plugins  # pyjpegls comes with highdicom
    parsed = pydicom.dcmread(path)
    for plugin in decoder.available_plugins:
        np.testing.assert_array_equal(pixel_array(parsed, decoding_plugin=plugin), stored)


# --- the pure pieces of the chain: PS3.3 windowing into [0, 1], colour to grey, header reading ---

VALUES = np.array([[-1000.0, 0.0, 9.0, 9.5], [10.0, 10.5, 11.0, 5000.0]], dtype=np.float32)


def ps33_linear(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 (LINEAR) with output range [0, 1], in float64."""
    x = np.asarray(x, dtype=np.float64)
    if w == 1:
        return (x > c - 0.5).astype(np.float64)
    return np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0)


@pytest.mark.parametrize("center, width", [(10.0, 2.0), (10.0, 1.0), (10.0, 7.0), (-3.0, 4000.0)])
def test_linear_follows_ps33_and_is_the_default(center: float, width: float) -> None:
    expected = ps33_linear(VALUES, center, width)
    out = window_to_unit(VALUES.copy(), center, width)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_array_equal(out, window_to_unit(VALUES.copy(), center, width, "LINEAR"))


def test_width_two_is_a_ramp_not_a_threshold() -> None:
    """Width 2 leaves a unit ramp: a value half-way between two integers maps to 0.5."""
    out = window_to_unit(np.array([9.0, 9.5, 10.0], dtype=np.float32), 10.0, 2.0)
    np.testing.assert_array_equal(out, [0.0, 0.5, 1.0])


def test_width_one_is_a_threshold_at_center_minus_half() -> None:
    out = window_to_unit(np.array([9.0, 9.5, 9.51, 10.0], dtype=np.float32), 10.0, 1.0)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [0.0, 0.0, 1.0, 1.0])


def test_linear_exact_and_sigmoid() -> None:
    exact = window_to_unit(VALUES.copy(), 10.0, 4.0, "LINEAR_EXACT")
    np.testing.assert_allclose(exact, np.clip((VALUES.astype(np.float64) - 10.0) / 4.0 + 0.5, 0, 1), atol=1e-6)
    sigmoid = window_to_unit(VALUES.copy(), 10.0, 4.0, "SIGMOID")
    with np.errstate(over="ignore"):
        reference = 1.0 / (1.0 + np.exp(-4.0 * (VALUES.astype(np.float64) - 10.0) / 4.0))
    np.testing.assert_allclose(sigmoid, reference, atol=1e-6)
    assert exact.dtype == sigmoid.dtype == np.float32


@pytest.mark.parametrize("function, width", [("LINEAR", 7.0), ("LINEAR", 1.0), ("LINEAR_EXACT", 4.0), ("SIGMOID", 4.0)])
@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.int32])
def test_integer_input_gives_the_same_float32_result(function: str, width: float, dtype: type) -> None:
    stored = np.array([[0, 5, 9, 10], [11, 12, 300, 4095]], dtype=dtype)
    out = window_to_unit(stored, 10.0, width, function)
    assert out.dtype == np.float32 and stored.dtype == dtype  # integers are not overwritten
    np.testing.assert_array_equal(out, window_to_unit(stored.astype(np.float32), 10.0, width, function))


@pytest.mark.parametrize("function, width", [("LINEAR", 7.0), ("LINEAR", 1.0), ("LINEAR_EXACT", 4.0), ("SIGMOID", 4.0)])
def test_float32_input_is_windowed_in_place(function: str, width: float) -> None:
    values = VALUES.copy()
    assert window_to_unit(values, 10.0, width, function) is values


def test_extreme_values_raise_no_floating_point_warnings() -> None:
    huge = np.array([-3e38, -1e6, 0.0, 1e6, 3e38], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sigmoid = window_to_unit(huge.copy(), 0.0, 1.0, "SIGMOID")
        linear = window_to_unit(huge.copy(), 0.0, 2.0, "LINEAR")
    np.testing.assert_array_equal(sigmoid, [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(linear, ps33_linear(huge, 0.0, 2.0))


@pytest.mark.parametrize("bits", [8, 16])
def test_rgb_becomes_float32_bt601_grey_in_its_bit_depth(tmp_path: Path, bits: int) -> None:
    top = 2**bits - 1
    rgb = np.array([[[top, 0, 0], [0, top, 0]], [[0, 0, top], [top // 2, top, top // 4]]], dtype=np.uint8 if bits == 8 else np.uint16)
    ds = make_image(modality="OT")
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.Rows, ds.Columns = 2, 2
    ds.PixelData = rgb.tobytes()
    values, meta = read_dicom(save(ds, tmp_path / f"rgb{bits}.dcm"))
    expected = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / top
    assert values.dtype == np.float32 and values.shape == (2, 2)
    np.testing.assert_allclose(values, expected, atol=1e-6)
    assert meta["presentation_ready"] is True


# --- which window and which rescale a header asks for ------------------------------------------

def header(**tags: object) -> Dataset:
    ds = Dataset()
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def frame_groups(*windows: tuple[float, float] | None, shared: tuple[float, float, str] | None = None) -> Dataset:
    """An enhanced multi-frame header with one Frame VOI LUT item per frame (None: no window there)."""
    ds = Dataset()
    ds.PerFrameFunctionalGroupsSequence = []
    for window in windows:
        group = Dataset()
        if window is not None:
            item = header(WindowCenter=window[0], WindowWidth=window[1])
            group.FrameVOILUTSequence = [item]
        ds.PerFrameFunctionalGroupsSequence.append(group)
    if shared is not None:
        group = Dataset()
        group.FrameVOILUTSequence = [header(WindowCenter=shared[0], WindowWidth=shared[1], VOILUTFunction=shared[2])]
        ds.SharedFunctionalGroupsSequence = [group]
    return ds


def test_the_first_of_several_windows_is_used() -> None:
    ds = header(WindowCenter=[1000, 40], WindowWidth=[2000, 400])
    assert _window(ds) == (1000.0, 2000.0, "LINEAR")
    assert _window(header(WindowCenter="40", WindowWidth="400")) == (40.0, 400.0, "LINEAR")


@pytest.mark.parametrize("tags", [{}, {"WindowCenter": 40}, {"WindowWidth": 400}])
def test_no_window_without_both_values(tags: dict) -> None:
    assert _window(header(**tags)) is None


def test_enhanced_frames_take_their_own_window_then_the_shared_one() -> None:
    ds = frame_groups((100, 50), (200, 60), None, shared=(300, 70, "SIGMOID"))
    assert _window(ds) == (100.0, 50.0, "LINEAR")  # the function belongs to the item the window came from
    assert _window(ds, frame=1) == (200.0, 60.0, "LINEAR")
    assert _window(ds, frame=2) == (300.0, 70.0, "SIGMOID")
    assert _window(frame_groups(None, shared=(300, 70, "LINEAR_EXACT"))) == (300.0, 70.0, "LINEAR_EXACT")
    top_level = frame_groups((100, 50))
    top_level.VOILUTFunction = "LINEAR_EXACT"
    assert _window(top_level) == (100.0, 50.0, "LINEAR_EXACT")  # a top-level function wins
    assert _window(frame_groups(None)) is None


def test_functions_are_normalised_and_unknown_ones_fall_back(caplog: pytest.LogCaptureFixture) -> None:
    lower = header(WindowCenter=40, WindowWidth=400, VOILUTFunction="sigmoid ")
    unknown = header(WindowCenter=40, WindowWidth=400, VOILUTFunction="GAMMA")
    caplog.clear()  # pydicom's own note about the lower-case value
    assert _window(lower)[2] == "SIGMOID"
    assert _window(header(WindowCenter=40, WindowWidth=400, VOILUTFunction="LINEAR"))[2] == "LINEAR"
    assert caplog.messages == []
    assert _window(unknown) == (40.0, 400.0, "LINEAR")
    assert caplog.messages == ["unknown VOI LUT Function 'GAMMA', using LINEAR"]


@pytest.mark.parametrize("center, width, function, valid", [
    (40, 1, "LINEAR", True), (40, 0.5, "LINEAR", False), (40, 0.5, "LINEAR_EXACT", True),
    (40, 0.5, "SIGMOID", True), (40, 0, "LINEAR_EXACT", False), (40, -1, "SIGMOID", False),
    (1e39, 400, "LINEAR", False), (40, 1e39, "LINEAR", False), (-1e39, 400, "LINEAR", False),
])
def test_window_values_dicom_allows(center: float, width: float, function: str, valid: bool) -> None:
    found = _window(header(WindowCenter=center, WindowWidth=width, VOILUTFunction=function))
    assert found == ((float(center), float(width), function) if valid else None)


@pytest.mark.parametrize("center, width", [("abc", "400"), ("40", ""), ([], [])])
def test_unreadable_window_values_are_no_window(center: object, width: object) -> None:
    ds = Dataset()
    ds.add_new("WindowCenter", "DS", None)
    ds.add_new("WindowWidth", "DS", None)
    ds["WindowCenter"]._value, ds["WindowWidth"]._value = center, width  # as a malformed file would give them
    assert _window(ds) is None


def test_rescale_reads_top_level_then_the_frame_group() -> None:
    assert _rescale(header()) is None
    assert _rescale(header(RescaleSlope=2, RescaleIntercept=-100)) == (2.0, -100.0)
    assert _rescale(header(RescaleSlope=2)) == (2.0, 0.0)
    assert _rescale(header(RescaleIntercept=-1024)) == (1.0, -1024.0)
    ds = Dataset()
    group = Dataset()
    group.PixelValueTransformationSequence = [header(RescaleSlope=0.5, RescaleIntercept=7)]
    ds.PerFrameFunctionalGroupsSequence = [Dataset(), group]
    assert _rescale(ds, frame=1) == (0.5, 7.0)
    assert _rescale(ds, frame=0) is None


@pytest.mark.parametrize("slope, intercept", [(0, 0), (1e39, 0), (1, 1e39), (1, -1e39)])
def test_rescale_values_that_cannot_work_are_refused(slope: float, intercept: float) -> None:
    with pytest.raises(ImageReadError, match="Rescale Slope/Intercept"):
        _rescale(header(RescaleSlope=slope, RescaleIntercept=intercept))


def test_palette_colour_becomes_bt601_grey_of_its_lookup(tmp_path: Path) -> None:
    index = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    red, green, blue = (np.array(c, dtype=np.uint16) for c in ([65535, 0, 0, 30000], [0, 65535, 0, 30000], [0, 0, 65535, 30000]))
    ds = make_image(index.astype(np.uint16), modality="OT", bits_stored=8)
    ds.BitsAllocated, ds.PhotometricInterpretation = 8, "PALETTE COLOR"
    ds.PixelData = index.tobytes()
    for name, table in (("Red", red), ("Green", green), ("Blue", blue)):
        setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [4, 0, 16])
        setattr(ds, f"{name}PaletteColorLookupTableData", table.tobytes())
    values, meta = read_dicom(save(ds, tmp_path / "palette.dcm"))
    rgb = np.stack([red, green, blue], axis=-1)[index].astype(np.float64)
    assert values.dtype == np.float32 and meta["presentation_ready"] is True
    np.testing.assert_allclose(values, rgb @ np.array([0.299, 0.587, 0.114]) / 65535, atol=1e-6)


def test_float_pixel_data_is_kept_as_real_world_values(tmp_path: Path) -> None:
    stored = np.array([[-1.5, 0.0], [2.25, 1000.0]], dtype=np.float32)
    ds = make_image(modality="OT")
    del ds.PixelData, ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    ds.Rows, ds.Columns, ds.BitsAllocated = 2, 2, 32
    ds.FloatPixelData = stored.tobytes()
    values, meta = read_dicom(save(ds, tmp_path / "float.dcm"))
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, stored)
    assert meta["presentation_ready"] is False and meta["value_range"] == (-1.5, 1000.0)


def test_a_window_is_applied_when_it_overlaps_the_data_and_ignored_when_it_misses(tmp_path: Path) -> None:
    overlapping = make_image(WindowCenter=4500, WindowWidth=1000)  # [4000, 5000] catches 4095
    values, meta = read_dicom(save(overlapping, tmp_path / "overlap.dcm"))
    np.testing.assert_allclose(values, linear(STORED.astype(np.float64), 4500, 1000), atol=1e-6)
    assert meta["window"] == (4500.0, 1000.0) and meta["window_ignored"] is None
    missing_window = make_image(WindowCenter=5000, WindowWidth=1000)  # [4500, 5500]: no data there
    values, meta = read_dicom(save(missing_window, tmp_path / "miss.dcm"))
    np.testing.assert_array_equal(values, STORED.astype(np.float32))
    assert meta["window"] is None and meta["window_ignored"] == (5000.0, 1000.0) and meta["presentation_ready"] is False


@pytest.mark.parametrize("tags, detail", [
    ({"RescaleSlope": 1e27, "RescaleIntercept": 0}, "Rescale Slope/Intercept 1e+27/0.0 overflow float32"),
    ({"RescaleSlope": 1e30, "RescaleIntercept": 0}, "Rescale Slope/Intercept 1e+30/0.0"),
    ({"RescaleSlope": 0, "RescaleIntercept": 0}, "Rescale Slope/Intercept 0.0/0.0"),
])
def test_unusable_rescales_name_the_file_and_the_values(tmp_path: Path, tags: dict, detail: str) -> None:
    path = save(make_image(**tags), tmp_path / "rescale.dcm")
    with pytest.raises(ImageReadError) as raised:
        read_dicom(path)
    assert (raised.value.path, raised.value.reason, raised.value.detail) == (str(path), ReadFailure.INVALID_VALUE, detail)


def test_an_unreadable_rescale_string_names_the_file(tmp_path: Path) -> None:
    ds = make_image()
    ds.add_new("RescaleSlope", "DS", None)
    ds["RescaleSlope"]._value = "abc"
    ds.RescaleIntercept = 0
    path = save(ds, tmp_path / "bad_rescale.dcm")
    with pytest.raises(ImageReadError) as raised:
        read_dicom(path)
    assert raised.value.path == str(path) and raised.value.reason == ReadFailure.INVALID_VALUE
    assert raised.value.detail.startswith("Rescale Slope/Intercept")


def test_an_unusable_modality_lut_names_the_file(tmp_path: Path) -> None:
    ds = modality_lut_image([4096, 0, 16], [1, 2, 3])  # far fewer entries than the descriptor promises
    path = save(ds, tmp_path / "badlut.dcm")
    assert refusal(path, ReadFailure.INVALID_VALUE).startswith("Modality LUT Sequence unusable: ")


def test_modality_lut_value_range_follows_its_bit_depth(tmp_path: Path) -> None:
    table = (np.arange(4096) // 16).astype(np.uint16)
    ds = modality_lut_image([4096, 0, 8], table.tolist())
    values, meta = read_dicom(save(ds, tmp_path / "lut8.dcm"))
    np.testing.assert_array_equal(values, table[STORED].astype(np.float32))
    assert meta["value_range"] == (0.0, 255.0) and meta["presentation_ready"] is False


def test_a_windowed_image_reports_the_unit_range_and_a_missed_window_is_logged(tmp_path: Path,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    _, meta = read_dicom(save(make_image(WindowCenter=1000, WindowWidth=2000), tmp_path / "w.dcm"))
    assert meta["value_range"] == (0.0, 1.0)
    path = save(make_image(WindowCenter=9000, WindowWidth=1000), tmp_path / "miss.dcm")
    caplog.clear()
    read_dicom(path)
    assert f"{path}: window 9000.0/1000.0 lies outside the data range [0.0, 4095.0], not applied" in caplog.messages


def test_rescale_falls_back_to_the_frame_group_only_when_incomplete() -> None:
    group = Dataset()
    group.PixelValueTransformationSequence = [header(RescaleSlope=0.5, RescaleIntercept=7)]
    both = header(RescaleSlope=2, RescaleIntercept=-100)
    both.SharedFunctionalGroupsSequence = [group]
    assert _rescale(both) == (2.0, -100.0)
    slope_only = header(RescaleSlope=2)
    slope_only.SharedFunctionalGroupsSequence = [group]
    assert _rescale(slope_only) == (0.5, 7.0)
    intercept_only = header(RescaleIntercept=-100)
    intercept_only.SharedFunctionalGroupsSequence = [group]
    assert _rescale(intercept_only) == (0.5, 7.0)
    per_frame = Dataset()
    per_frame.PerFrameFunctionalGroupsSequence = [Dataset(), group]
    assert _rescale(per_frame) is None  # frame 0 by default


@pytest.mark.parametrize("slope, intercept, expected", [("", "5", (1.0, 5.0)), ("2", " ", (2.0, 0.0))])
def test_empty_rescale_values_take_the_identity(slope: str, intercept: str, expected: tuple) -> None:
    ds = Dataset()
    ds.add_new("RescaleSlope", "DS", None)
    ds.add_new("RescaleIntercept", "DS", None)
    ds["RescaleSlope"]._value, ds["RescaleIntercept"]._value = slope, intercept
    assert _rescale(ds) == expected


def test_an_intercept_at_the_float32_guard_is_refused() -> None:
    with pytest.raises(ImageReadError):
        _rescale(header(RescaleSlope=1, RescaleIntercept=1e30))


@pytest.mark.parametrize("depth, expected", [(8, 8), (9, None), (10, 10), (12, 12), (16, 16), (17, None)])
def test_voi_lut_depth_is_8_or_10_to_16_bits(depth: int, expected: int | None) -> None:
    item = header(LUTDescriptor=[256, 0, depth], LUTData=[0] * 256)
    assert _voi_lut_depth(header(VOILUTSequence=[item])) == expected


@pytest.mark.parametrize("item_tags", [{"LUTData": [0] * 4}, {"LUTDescriptor": [4, 0, 16]},
                                       {"LUTDescriptor": [4, 0], "LUTData": [0] * 4}])
def test_an_incomplete_voi_lut_item_has_no_depth(item_tags: dict) -> None:
    assert _voi_lut_depth(header(VOILUTSequence=[header(**item_tags)])) is None
    assert _voi_lut_depth(header()) is None


def test_a_broken_palette_names_the_file(tmp_path: Path) -> None:
    index = np.array([[0, 1], [2, 200]], dtype=np.uint8)
    ds = make_image(index.astype(np.uint16), modality="OT", bits_stored=8)
    ds.BitsAllocated, ds.PhotometricInterpretation = 8, "PALETTE COLOR"
    ds.PixelData = index.tobytes()
    for name in ("Red", "Green", "Blue"):
        setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [4, 0, 16])
        setattr(ds, f"{name}PaletteColorLookupTableData", b"\x00\x01")  # one entry for four
    path = save(ds, tmp_path / "palette.dcm")
    assert refusal(path, ReadFailure.INVALID_VALUE).startswith("palette colour lookup failed: ")


def test_colour_images_report_no_window_and_no_inversion(tmp_path: Path) -> None:
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    ds = make_image(modality="OT")
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.Rows, ds.Columns = 7, 2, 2
    ds.PixelData = rgb.tobytes()
    _, meta = read_dicom(save(ds, tmp_path / "rgb.dcm"))
    assert meta["window"] is None and meta["inverted"] is False
