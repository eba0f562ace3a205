"""Grad-CAM overlays as RGB Secondary Capture images (a new series in the source study)."""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from monai_fracture.reports import concepts
from monai_fracture.reports.results import Heatmap, ModelIdentity

_BIPED = {value.value for value in hd.enum.PatientOrientationValuesBiped}


def overlay_rgb(image: np.ndarray, cam: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Blend a [0, 1] class activation map (jet colours) over a [0, 1] grey image -> uint8 RGB."""
    from matplotlib import colormaps  # imported here: only heatmap runs need matplotlib

    grey = np.clip(np.nan_to_num(np.asarray(image, dtype=np.float32)), 0.0, 1.0)
    heat = np.clip(np.nan_to_num(np.asarray(cam, dtype=np.float32)), 0.0, 1.0)
    if grey.shape != heat.shape:
        raise ValueError(f"image {grey.shape} and heatmap {heat.shape} differ in shape")
    colours = colormaps["jet"](heat)[..., :3].astype(np.float32)
    weight = alpha * heat[..., None]  # cold regions stay grey so the anatomy remains readable
    rgb = grey[..., None] * (1.0 - weight) + colours * weight
    return np.round(rgb * 255.0).astype(np.uint8)


def _patient_orientation(header: Dataset) -> tuple[str, str] | None:
    value = header.get("PatientOrientation")
    if value is None or isinstance(value, str) or len(value) != 2:
        return None
    row, col = (str(v) for v in value)
    return (row, col) if row in _BIPED and col in _BIPED else None


def build_heatmap_sc(
    header: Dataset,
    heatmap: Heatmap,
    model_info: ModelIdentity,
    *,
    series_uid: str,
    sop_uid: str,
    series_number: int = 9903,
    instance_number: int = 1,
    series_description: str = "Fracture heatmaps (AI, Grad-CAM)",
) -> hd.sc.SCImage:
    """An RGB Secondary Capture of the Grad-CAM overlay in the same study (new series)."""
    rgb = overlay_rgb(heatmap.image, heatmap.cam)
    orientation = _patient_orientation(header)
    laterality = header.get("Laterality") or header.get("ImageLaterality")
    laterality = laterality if laterality in {"L", "R"} else None
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=header,
        pixel_array=rgb,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=UID(series_uid),
        series_number=series_number,
        sop_instance_uid=UID(sop_uid),
        instance_number=instance_number,
        manufacturer=concepts.MANUFACTURER,
        patient_orientation=orientation or ("L", "F"),
        laterality=laterality,
        series_description=series_description[:64],
    )
    if orientation is None:
        sc.PatientOrientation = None  # type 2: unknown stays empty rather than invented
    sc.BurnedInAnnotation = "NO"
    sc.ImageComments = (
        f"Grad-CAM of {model_info.name} {model_info.version}; P(fracture)={heatmap.probability:.4f}"
    )[:10240]
    derivation = Dataset()
    derivation.ReferencedSOPClassUID = header.SOPClassUID
    derivation.ReferencedSOPInstanceUID = header.SOPInstanceUID
    sc.SourceImageSequence = [derivation]
    return sc
