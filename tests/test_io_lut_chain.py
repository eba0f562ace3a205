"""The pure pieces of the intensity chain on their own: PS3.3 windowing into [0, 1], and colour to grey."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from monai_fracture.io import read_dicom
from monai_fracture.io.dicom_pixels import window_to_unit
from test_io_dicom import make_image, save

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
