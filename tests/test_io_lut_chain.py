"""The pure pieces of the intensity chain on their own: PS3.3 windowing into [0, 1], and colour to grey."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from pydicom.dataset import Dataset

from monai_fracture.io import ImageReadError, read_dicom
from monai_fracture.io.dicom_pixels import _rescale, _window, window_to_unit
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
