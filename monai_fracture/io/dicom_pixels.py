"""Decoding pixel data once, safely, and mapping it to float32 with the DICOM LUT chain.

Order (PS3.4 N.2): stored values -> Modality LUT (Rescale or LUT) -> VOI LUT (LUT or window,
projection images only) -> presentation (MONOCHROME1 / Presentation LUT Shape INVERSE inverted
so that high = bright). Colour images become grey (ITU-R BT.601 luma) scaled to [0, 1].
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, get_decoder, pixel_array
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import JPEGLSTransferSyntaxes, UID

from .dicom_header import functional_group_item
from .errors import ImageReadError, ReadFailure
from .pixel_limits import check_budget, check_encapsulated_frames, decode_cost

logger = logging.getLogger(__name__)

#: Refuse to decode more elements (rows x columns x samples x frames) than this: 2**28 float32
#: values are 1 GiB. Hostile headers are refused before anything is allocated.
MAX_DECODED_ELEMENTS = 1 << 28

#: Projection modalities whose VOI (window / VOI LUT) is applied, giving presentation values.
#: Files without a Modality are treated like OT. CT/MR/PT/NM/US... keep modality values.
PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "RF", "XA", "IO", "PX", "OT", "SC", "RG", "DF", "XC", "ES", "GM"})

#: Magnitude beyond which LUT parameters would overflow float32 arithmetic (max ~3.4e38).
FLOAT32_SAFE = 1e30

MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420", "YBR_PARTIAL_422")
PALETTE = "PALETTE COLOR"
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class PixelLayout:
    """The validated group 0028 values that decoding depends on."""

    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str
    transfer_syntax: UID


def _int_tag(ds: Dataset, keyword: str, path: Any, default: int | None = None) -> int:
    value = ds.get(keyword, default)
    if value is None or (isinstance(value, str) and not value.strip()):
        if default is None:
            raise ImageReadError(path, ReadFailure.INVALID_VALUE, f"missing required {keyword}")
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ImageReadError(path, ReadFailure.INVALID_VALUE, f"{keyword} is not an integer: {value!r}") from None
    return number


def validate_layout(ds: Dataset, path: Any) -> PixelLayout:
    """Check the header values pixel decoding trusts, before anything is allocated."""
    rows = _int_tag(ds, "Rows", path)
    columns = _int_tag(ds, "Columns", path)
    if rows <= 0 or columns <= 0:
        raise ImageReadError(path, ReadFailure.UNSUPPORTED_GEOMETRY, f"Rows x Columns is {rows} x {columns}")
    frames = _int_tag(ds, "NumberOfFrames", path, default=1)
    if frames <= 0:
        raise ImageReadError(path, ReadFailure.INVALID_VALUE, f"NumberOfFrames is {frames}")
    samples = _int_tag(ds, "SamplesPerPixel", path, default=1)
    if samples not in (1, 3):
        raise ImageReadError(path, ReadFailure.INVALID_VALUE, f"SamplesPerPixel is {samples} (1 or 3 expected)")
    float_data = "FloatPixelData" in ds or "DoubleFloatPixelData" in ds
    bits_allocated = _int_tag(ds, "BitsAllocated", path, default=32 if "FloatPixelData" in ds else (64 if float_data else None))
    if bits_allocated not in (1, 8, 16, 32, 64):
        raise ImageReadError(path, ReadFailure.INVALID_VALUE, f"BitsAllocated is {bits_allocated}")
    bits_stored = _int_tag(ds, "BitsStored", path, default=bits_allocated)
    if not 1 <= bits_stored <= bits_allocated:
        raise ImageReadError(path, ReadFailure.INVALID_VALUE, f"BitsStored {bits_stored} outside 1..BitsAllocated ({bits_allocated})")
    pixel_representation = _int_tag(ds, "PixelRepresentation", path, default=0)
    if pixel_representation not in (0, 1):
        raise ImageReadError(path, ReadFailure.INVALID_VALUE, f"PixelRepresentation is {pixel_representation}")
    photometric = str(ds.get("PhotometricInterpretation") or "").strip().upper()
    if not photometric:
        if samples != 1:
            raise ImageReadError(path, ReadFailure.INVALID_VALUE, "PhotometricInterpretation missing for colour data")
        photometric = "MONOCHROME2"
        ds.PhotometricInterpretation = photometric
        logger.info("%s: no PhotometricInterpretation, assuming MONOCHROME2", path)
    if photometric not in MONOCHROME + COLOUR + (PALETTE,):
        raise ImageReadError(path, ReadFailure.INVALID_VALUE, f"unsupported PhotometricInterpretation {photometric!r}")
    if (photometric in MONOCHROME or photometric == PALETTE) != (samples == 1):
        raise ImageReadError(path, ReadFailure.INVALID_VALUE, f"{photometric} with SamplesPerPixel {samples}")
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID") or "1.2.840.10008.1.2.1"))
    return PixelLayout(rows, columns, frames, samples, bits_allocated, bits_stored, pixel_representation == 1, photometric, syntax)


def _check_decodable(ds: Dataset, layout: PixelLayout, path: Any, index: int | None) -> None:
    frames_to_decode = layout.frames if index is None else 1
    elements = layout.rows * layout.columns * layout.samples * frames_to_decode
    if elements > MAX_DECODED_ELEMENTS:
        raise ImageReadError(
            path, ReadFailure.UNSUPPORTED_GEOMETRY,
            f"{layout.rows} x {layout.columns} x {layout.samples} x {frames_to_decode} frames exceeds the limit of {MAX_DECODED_ELEMENTS} values",
        )
    syntax = layout.transfer_syntax
    held = len(ds.PixelData) if "PixelData" in ds else 0  # parse_dicom read the whole file
    check_budget(path, decode_cost(elements, layout.bits_allocated, held),
                 f"{layout.rows} x {layout.columns} x {layout.samples} x {frames_to_decode} frames at {layout.bits_allocated} bits")
    if syntax.is_encapsulated:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            raise ImageReadError(path, ReadFailure.UNDECODABLE, f"no decoder for transfer syntax {syntax.name} ({syntax})") from None
        if not decoder.is_available:
            raise ImageReadError(path, ReadFailure.UNDECODABLE, f"no installed plugin decodes {syntax.name} ({syntax})")
        if "PixelData" in ds:  # decoders allocate from the stream's own header: it must agree
            check_encapsulated_frames(ds.PixelData, syntax, layout.rows, layout.columns, layout.samples,
                                      layout.bits_allocated, layout.frames, index, path)
        return
    if "PixelData" not in ds:
        return
    expected = get_expected_length(ds, "bytes")
    actual = len(ds.PixelData)
    if actual < expected:
        raise ImageReadError(path, ReadFailure.TRUNCATED, f"pixel data has {actual} bytes, header promises {expected}")


def decode_frames(ds: Dataset, layout: PixelLayout, path: Any, index: int | None) -> np.ndarray:
    """Decode one frame (``index``) or all frames (None), with failures mapped to our reasons."""
    _check_decodable(ds, layout, path, index)
    syntax = layout.transfer_syntax
    try:
        if not syntax.is_encapsulated and "PixelData" in ds:
            # A read-only view on the dataset's bytes: no copy, the float32 conversion is the copy.
            arr = _native_stored(pixel_array(ds, index=index, view_only=True, correct_unused_bits=False), layout)
        else:
            arr = _decode_with_plugins(ds, syntax, index)
    except (MemoryError, ImageReadError):
        raise
    except BaseException as exc:  # decoders raise ValueError/RuntimeError/... and Rust plugins panic
        if not isinstance(exc, Exception) and not is_plugin_panic(exc):
            raise  # KeyboardInterrupt, SystemExit, GeneratorExit
        text = f"{type(exc).__name__}: {exc}"
        syntax = layout.transfer_syntax
        truncated = "less than expected" in text or "truncat" in text.lower() or isinstance(exc, EOFError)
        reason = ReadFailure.TRUNCATED if truncated else ReadFailure.UNDECODABLE
        raise ImageReadError(path, reason, f"{syntax.name} ({syntax}): {text[:400]}") from None
    expected = (layout.rows, layout.columns) if index is not None or layout.frames == 1 else (layout.frames, layout.rows, layout.columns)
    if tuple(arr.shape[: len(expected)]) != expected:
        raise ImageReadError(path, ReadFailure.UNSUPPORTED_GEOMETRY, f"decoded shape {arr.shape}, header says {expected}")
    return arr


#: Decoder plugins tried first where several are installed: CharLS (pyjpegls, which highdicom
#: installs) decodes a 2048² 16-bit JPEG-LS about 3x faster than libjpeg, pydicom's default.
PREFERRED_PLUGINS: dict[str, str] = {uid: "pyjpegls" for uid in JPEGLSTransferSyntaxes}


def _decode_with_plugins(ds: Dataset, syntax: UID, index: int | None) -> np.ndarray:
    plugin = PREFERRED_PLUGINS.get(str(syntax))
    if plugin is not None and plugin in get_decoder(syntax).available_plugins:
        try:
            return pixel_array(ds, index=index, decoding_plugin=plugin)
        except MemoryError:
            raise
        except Exception as exc:  # let the other plugins have a go, as pydicom would
            logger.debug("%s plugin failed (%s), trying the others", plugin, exc)
    return pixel_array(ds, index=index)


def _native_stored(arr: np.ndarray, layout: PixelLayout) -> np.ndarray:
    """pydicom's correction of unused high bits, done only when a value actually needs it.

    With Bits Stored < Bits Allocated the bits above Bits Stored must be ignored (PS3.5 8.1.1);
    pydicom copies and shifts every pixel for that. Values already inside the Bits Stored range
    (unsigned: high bits 0; signed: high bits a sign extension) are unchanged by the shift, so
    two cheap integer reductions decide whether it is needed.
    """
    if arr.dtype.kind not in "ui" or not layout.bits_stored < arr.dtype.itemsize * 8 or arr.size == 0:
        return arr
    bits = layout.bits_stored
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if arr.dtype.kind == "i" else (0, (1 << bits) - 1)
    if int(arr.min()) >= low and int(arr.max()) <= high:
        return arr
    shift = arr.dtype.itemsize * 8 - bits
    out = np.left_shift(arr, shift)  # a new, writeable array; same steps as pydicom
    np.right_shift(out, shift, out=out)
    return out


def is_plugin_panic(exc: BaseException) -> bool:
    """A panic inside a Rust decoder plugin (pyo3 ``PanicException`` derives from BaseException)."""
    return type(exc).__name__ == "PanicException"


def _rescale(ds: Dataset, frame: int = 0) -> tuple[float, float] | None:
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is None or intercept is None:
        item = functional_group_item(ds, "PixelValueTransformationSequence", frame)
        if item is not None:
            slope, intercept = item.get("RescaleSlope"), item.get("RescaleIntercept")
    if slope is None and intercept is None:
        return None
    try:
        slope_f = float(slope) if slope is not None and str(slope).strip() != "" else 1.0
        intercept_f = float(intercept) if intercept is not None and str(intercept).strip() != "" else 0.0
    except (TypeError, ValueError):
        raise ImageReadError(None, ReadFailure.INVALID_VALUE, f"Rescale Slope/Intercept {slope!r}/{intercept!r}") from None
    if not (abs(slope_f) < FLOAT32_SAFE and abs(intercept_f) < FLOAT32_SAFE) or slope_f == 0:
        raise ImageReadError(None, ReadFailure.INVALID_VALUE, f"Rescale Slope/Intercept {slope_f}/{intercept_f}")
    return slope_f, intercept_f


def _window(ds: Dataset, frame: int = 0) -> tuple[float, float, str] | None:
    """(center, width, function) of the first window, if a valid one is present."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    function = ds.get("VOILUTFunction")
    if center is None or width is None:
        item = functional_group_item(ds, "FrameVOILUTSequence", frame)
        if item is not None:
            center, width = item.get("WindowCenter"), item.get("WindowWidth")
            function = function or item.get("VOILUTFunction")
    if center is None or width is None:
        return None
    try:
        center_f = float(center[0] if hasattr(center, "__len__") and not isinstance(center, str) else center)
        width_f = float(width[0] if hasattr(width, "__len__") and not isinstance(width, str) else width)
    except (TypeError, ValueError, IndexError):
        return None
    function = str(function or "LINEAR").strip().upper()
    if not (abs(center_f) < FLOAT32_SAFE and abs(width_f) < FLOAT32_SAFE):
        return None
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        logger.warning("unknown VOI LUT Function %r, using LINEAR", function)
        function = "LINEAR"
    if (function == "LINEAR" and width_f < 1) or width_f <= 0:
        return None
    return center_f, width_f, function


def window_to_unit(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """PS3.3 C.11.2.1.2 windowing with output range [0, 1], in place on a float32 array.

    Another dtype (integer stored values) gives a new float32 array, converted in the first pass.
    """
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        if values.dtype != np.float32 and (function == "SIGMOID" or (function == "LINEAR" and width == 1.0)):
            values = values.astype(np.float32)  # the rare paths convert first
        if function == "SIGMOID":
            values -= np.float32(center)
            values *= np.float32(-4.0 / width)
            np.exp(values, out=values)
            values += np.float32(1.0)
            np.reciprocal(values, out=values)
            return values
        if function == "LINEAR":
            center, width = center - 0.5, width - 1.0
        if width == 0:  # LINEAR with width 1: a threshold at center - 0.5
            np.greater(values, np.float32(center), out=values, casting="unsafe")
            return values
        if values.dtype == np.float32:
            values -= np.float32(center - width / 2.0)
        else:  # the cast and the subtraction in one pass
            values = np.subtract(values, np.float32(center - width / 2.0), dtype=np.float32)
        values *= np.float32(1.0 / width)
        np.clip(values, 0.0, 1.0, out=values)
    return values


def _stored_range(layout: PixelLayout) -> tuple[float, float]:
    if layout.signed:
        return -(2.0 ** (layout.bits_stored - 1)), 2.0 ** (layout.bits_stored - 1) - 1
    return 0.0, 2.0**layout.bits_stored - 1


def _usable_lut(sequence: Any) -> bool:
    """A LUT sequence whose first item has a 3-value descriptor and data (others are ignored)."""
    if not sequence:
        return False
    item = sequence[0]
    descriptor = item.get("LUTDescriptor")
    return descriptor is not None and len(descriptor) == 3 and item.get("LUTData") is not None


def _voi_lut_depth(ds: Dataset) -> int | None:
    seq = ds.get("VOILUTSequence")
    if not seq:
        return None
    item = seq[0]
    descriptor = item.get("LUTDescriptor")
    if descriptor is None or item.get("LUTData") is None or len(descriptor) != 3:
        return None
    depth = int(descriptor[2])
    return depth if depth == 8 or 10 <= depth <= 16 else None


def grey_intensity(stored: np.ndarray, ds: Dataset, layout: PixelLayout, modality: str | None, path: Any, frame: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """Map decoded values to float32 following the intensity convention (docs/architecture.md)."""
    info: dict[str, Any] = {"window": None, "presentation_ready": False, "inverted": False}
    if layout.photometric == PALETTE:
        try:
            rgb = apply_color_lut(stored, ds)
        except MemoryError:
            raise
        except Exception as exc:
            raise ImageReadError(path, ReadFailure.INVALID_VALUE, f"palette colour lookup failed: {exc}") from None
        top = float(np.iinfo(rgb.dtype).max) if rgb.dtype.kind in "ui" else 1.0
        info["presentation_ready"] = True
        return _luma(rgb, top), info
    if layout.samples == 3:
        top = float(2**layout.bits_stored - 1) if stored.dtype.kind in "ui" else 1.0
        info["presentation_ready"] = True
        return _luma(stored, top), info
    if _table_worthwhile(stored, ds, modality):
        return _grey_through_table(stored, ds, layout, modality, path, frame, info)
    return _grey_mono(stored, ds, layout, modality, path, frame, info)


def _table_worthwhile(stored: np.ndarray, ds: Dataset, modality: str | None) -> bool:
    """A VOI LUT Sequence on integer pixels: one lookup beats pydicom's five full-image passes."""
    return (
        stored.dtype.kind in "ui" and stored.dtype.itemsize <= 2 and stored.dtype.isnative and stored.size > (1 << 16)
        and (modality or "OT") in PROJECTION_MODALITIES and _voi_lut_depth(ds) is not None
        and not _usable_lut(ds.get("ModalityLUTSequence"))
    )


def _grey_through_table(stored: np.ndarray, ds: Dataset, layout: PixelLayout, modality: str | None, path: Any,
                        frame: int, info: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """:func:`_grey_mono` computed once per stored value present, then looked up per pixel.

    The chain maps each pixel on its own, and its only data-dependent step (the window-range
    check, after a Rescale, which is monotonic) sees the same minimum and maximum on the range
    of stored values as on the image: the result is identical, value for value.
    """
    low, high = int(stored.min()), int(stored.max())
    domain = np.arange(low, high + 1, dtype=stored.dtype)
    values, info = _grey_mono(domain, ds, layout, modality, path, frame, info)
    unsigned = np.dtype(f"u{stored.dtype.itemsize}")
    table = np.zeros(1 << (8 * stored.dtype.itemsize), dtype=np.float32)
    table[domain.view(unsigned)] = values  # signed values index by their two's complement bits
    return table[stored.view(unsigned)], info


def _grey_mono(stored: np.ndarray, ds: Dataset, layout: PixelLayout, modality: str | None, path: Any, frame: int,
               info: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Monochrome: Modality LUT or Rescale, VOI (projection images), inversion; float32."""
    if stored.dtype.kind == "f":  # Float Pixel Data: values are already real-world
        values = stored.astype(np.float32, copy=stored.dtype != np.float32 or not stored.flags.writeable)
        lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    elif _usable_lut(ds.get("ModalityLUTSequence")):
        try:
            values = apply_modality_lut(stored, ds).astype(np.float32, copy=False)
            depth = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        except MemoryError:
            raise
        except Exception as exc:
            raise ImageReadError(path, ReadFailure.INVALID_VALUE, f"Modality LUT Sequence unusable: {exc}") from None
        lo, hi = 0.0, 2.0**depth - 1
    else:
        try:
            rescale = _rescale(ds, frame)
        except ImageReadError as exc:
            raise ImageReadError(path, exc.reason, exc.detail) from None
        # Integer values stay integer until the first step that writes (rescale, window,
        # inversion): it converts to float32 as it goes, which saves a full-image pass. Each
        # value is cast exactly as ``astype(np.float32)`` would, so results are unchanged.
        values = stored
        lo, hi = _stored_range(layout)
        if rescale is not None and rescale != (1.0, 0.0):
            slope, intercept = rescale
            values = np.multiply(stored, np.float32(slope), dtype=np.float32)
            values += np.float32(intercept)
            lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
            if max(abs(lo), abs(hi)) >= FLOAT32_SAFE:
                raise ImageReadError(path, ReadFailure.INVALID_VALUE, f"Rescale Slope/Intercept {slope}/{intercept} overflow float32")

    invert = layout.photometric == "MONOCHROME1" or str(ds.get("PresentationLUTShape", "")).strip().upper() == "INVERSE"
    if (modality or "OT") in PROJECTION_MODALITIES:
        depth = _voi_lut_depth(ds)
        window = _window(ds, frame)
        if depth is not None:
            try:
                looked_up = apply_voi(np.rint(_float32(values)).astype(np.int32), ds)
                values = looked_up.astype(np.float32)
                values *= np.float32(1.0 / (2.0**depth - 1))
                info.update(presentation_ready=True, window=None, voi="VOILUTSequence")
            except MemoryError:
                raise
            except Exception as exc:
                logger.warning("%s: VOI LUT Sequence unusable (%s), ignoring it", path, exc)
                depth = None
        if depth is None and window is not None:
            center, width, function = window
            low, high = _float32_range(values)
            if high <= center - width / 2 or low >= center + width / 2:
                # a window that misses the data would give a blank image: keep modality values
                logger.warning("%s: window %s/%s lies outside the data range [%s, %s], not applied", path, center, width, low, high)
                info["window_ignored"] = (center, width)
            else:
                values = window_to_unit(values, center, width, function)
                info.update(presentation_ready=True, window=(center, width), voi=function)
    if invert:
        top = np.float32(1.0) if info["presentation_ready"] else np.float32(lo + hi)
        if values.dtype == np.float32:
            np.subtract(top, values, out=values)
        else:
            values = np.subtract(top, values, dtype=np.float32)
        info["inverted"] = True
    info["value_range"] = (0.0, 1.0) if info["presentation_ready"] else (lo, hi)
    return _float32(values), info


def _float32(values: np.ndarray) -> np.ndarray:
    return values if values.dtype == np.float32 else values.astype(np.float32)


def _float32_range(values: np.ndarray) -> tuple[float, float]:
    """min and max as the float32 image would have them (integer reductions read half the bytes)."""
    if values.dtype == np.float32:
        return float(values.min()), float(values.max())
    return float(np.float32(values.min())), float(np.float32(values.max()))


def _luma(rgb: np.ndarray, top: float) -> np.ndarray:
    if rgb.dtype.itemsize > 2 or rgb.dtype.kind == "f":
        rgb = rgb.astype(np.float32)
    grey = rgb @ _LUMA
    if top != 1.0:
        grey *= np.float32(1.0 / top)
    return grey.astype(np.float32, copy=False)
