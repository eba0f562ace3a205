"""Grayscale Softcopy Presentation State: the evidence region drawn over the original pixels.

A GSPS carries no pixels: it tells any PACS viewer how to show the source image (its window,
its presentation LUT) and what to draw on top (a polyline around the region of strongest
evidence, a point at its peak, a short text). So the radiologist sees the suspicion where it is,
on the original image, without a second image to compare.

The viewer applies the presentation state *instead of* the image's own display settings, so the
source's Modality LUT and VOI window are copied in (``presentation_header``); MONOCHROME1 images
get an INVERSE presentation LUT so bone stays white.
"""

from __future__ import annotations

import logging
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from monai_fracture.reports.results import ImageResult, ModelIdentity
from monai_fracture.reports.series import Placement
from monai_fracture.reports.writer import StudyOutput

logger = logging.getLogger(__name__)

#: Source attributes the presentation state needs beside the clean header: pixel layout and display.
PRESENTATION_KEYWORDS: tuple[str, ...] = (
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
)
LAYER = "AI_FRACTURE"
_YELLOW = (97.0, -21.0, 94.0)  # CIE L*a*b*


def presentation_header(clean: Dataset, source: Dataset) -> Dataset:
    """``clean`` (``evidence.clean_source_header``) plus the pixel and window attributes of ``source``.

    Window values are kept only when centre and width are numbers with width > 0 (else the
    viewer would get an invalid VOI); everything else is copied as is when present.
    """
    header = Dataset()
    header.update(clean)
    for keyword in PRESENTATION_KEYWORDS:
        value = source.get(keyword)
        if value is not None and value != "":
            setattr(header, keyword, value)
    header.SamplesPerPixel = int(header.get("SamplesPerPixel", 1) or 1)
    if not _valid_window(header):
        for keyword in ("WindowCenter", "WindowWidth", "VOILUTFunction"):
            if keyword in header:
                delattr(header, keyword)
    return header


def _first(value: object) -> float:
    """The first of a multi-valued DS (several windows: the first is the default)."""
    if isinstance(value, (MultiValue, list, tuple)):
        value = value[0]
    return float(value)  # type: ignore[arg-type]


def _valid_window(header: Dataset) -> bool:
    try:
        centre, width = _first(header.WindowCenter), _first(header.WindowWidth)
    except (AttributeError, TypeError, ValueError, IndexError):
        return False
    return bool(np.isfinite(centre) and np.isfinite(width) and width > 0)


def has_display_window(header: Dataset) -> bool:
    """Whether ``header`` tells a viewer how to window it (a valid centre/width or a VOI LUT)."""
    return "VOILUTSequence" in header or _valid_window(header)


def window_from_pixels(values: np.ndarray) -> tuple[float, float]:
    """A (centre, width) window spanning the 1st to 99th percentile of modality values."""
    sample = np.asarray(values, dtype=np.float64).ravel()[:: max(1, values.size // 200_000)]
    low, high = np.percentile(sample, [1.0, 99.0])
    width = max(float(high - low), 1.0)
    return float(low + width / 2.0), width


def _text_box(result: ImageResult, rows: int, cols: int, text: str) -> tuple[float, float, float, float]:
    """A box (column, row of top left, then bottom right; DICOM pixel units) just above the region."""
    assert result.region is not None
    height = max(12.0, rows * 0.035)
    width = min(float(cols), len(text) * height * 0.55)
    region_rows = [r for r, _ in result.region.outline]
    region_cols = [c for _, c in result.region.outline]
    top = min(region_rows) - height * 1.2
    if top < 1.0:  # no room above: write below the region
        top = min(max(region_rows) + height * 0.2, rows - height - 1.0)
    left = min(max(1.0, min(region_cols)), max(1.0, cols - width - 1.0))
    top = max(1.0, top)
    return (left, top, min(float(cols), left + width), min(float(rows), top + height))


def overlay_label(result: ImageResult) -> str:
    """The short text drawn beside the region, e.g. ``Fracture suspected, p=0.93``."""
    return f"{result.finding_text()}, p={result.probability:.2f}"


def build_fracture_gsps(
    header: Dataset,
    result: ImageResult,
    model_info: ModelIdentity,
    placement: Placement,
) -> hd.pr.GrayscaleSoftcopyPresentationState:
    """A GSPS for one positive radiograph with a region; ``header`` from ``presentation_header``."""
    if result.region is None or not result.positive:
        raise ValueError("a fracture overlay needs a positive result with an evidence region")
    if len(result.sop_uids) != 1 or str(header.SOPInstanceUID) != result.sop_uids[0]:
        raise ValueError(f"the overlay result {result.sop_uids} does not refer to {header.SOPInstanceUID}")
    rows, cols = int(header.Rows), int(header.Columns)
    text = overlay_label(result)
    layer = hd.pr.GraphicLayer(layer_name=LAYER, order=1, description=f"{model_info.name} {model_info.version}"[:64],
                               display_color=hd.color.CIELabColor(*_YELLOW))
    outline = hd.pr.GraphicObject(graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
                                  graphic_data=result.region.scoord_outline(), units=hd.pr.AnnotationUnitsValues.PIXEL)
    peak = hd.pr.GraphicObject(graphic_type=hd.pr.GraphicTypeValues.POINT, graphic_data=result.region.scoord_peak(),
                               units=hd.pr.AnnotationUnitsValues.PIXEL)
    label = hd.pr.TextObject(text_value=text, units=hd.pr.AnnotationUnitsValues.PIXEL,
                             bounding_box=_text_box(result, rows, cols, text))
    annotation = hd.pr.GraphicAnnotation(referenced_images=[header], graphic_layer=layer,
                                         graphic_objects=[outline, peak], text_objects=[label])
    inverse = str(header.get("PhotometricInterpretation", "")) == "MONOCHROME1"
    shape = hd.PresentationLUTShapeValues.INVERSE if inverse else hd.PresentationLUTShapeValues.IDENTITY
    version = str(model_info.version)[:64] or "unknown"
    gsps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[header],
        manufacturer_model_name=str(model_info.name)[:64] or "monai-fracture",
        software_versions=version,
        device_serial_number=str(model_info.name)[:64] or "monai-fracture",
        content_label="AI_FRACTURE",
        content_description=result.summary(model_info)[:64],
        graphic_annotations=[annotation],
        graphic_layers=[layer],
        presentation_lut_transformation=hd.PresentationLUTTransformation(presentation_lut_shape=shape),
        **placement.highdicom_kwargs(),
    )
    # General Series Laterality is type 2C for a paired body part: the source's side, else empty (unknown)
    laterality = header.get("Laterality") or header.get("ImageLaterality")
    gsps.Laterality = laterality if laterality in {"L", "R"} else ""
    return gsps


def write(study: StudyOutput) -> list[Path]:
    """One GSPS per positive radiograph with an evidence region, drawn over the source pixels."""
    by_uid = study.by_uid
    raw_by_uid = {str(s.SOPInstanceUID): s for s in study.sources if "SOPInstanceUID" in s}
    overlays = [r for r in study.positives if r.region is not None and len(r.sop_uids) == 1]
    written = []
    for number, result in enumerate(overlays, start=1):
        uid = result.sop_uids[0]
        header = presentation_header(by_uid[uid], raw_by_uid.get(uid, by_uid[uid]))
        gsps = build_fracture_gsps(header, result, study.model_info,
                                   study.placement("pr", [result.content_key()], instance_number=number))
        written.append(study.save("PR", gsps))
    return written
