"""Grad-CAM overlays as RGB Secondary Capture images (a new series in the source study)."""

from __future__ import annotations

import os
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from monai_fracture.reports import series
from monai_fracture.reports.evidence import clean_study_headers
from monai_fracture.reports.files import atomic_write_dataset, object_file_name, study_folder
from monai_fracture.reports.results import Heatmap, ModelIdentity
from monai_fracture.reports.series import Placement
from monai_fracture.reports.writer import StudyOutput

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
    placement: Placement,
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
        patient_orientation=orientation or ("L", "F"),
        laterality=laterality,
        **placement.highdicom_kwargs(),
    )
    if orientation is None:
        sc.PatientOrientation = None  # type 2: unknown stays empty rather than invented
    if laterality is None:
        # General Series Laterality is type 2C for a paired body part: unknown ("U", "B", absent) stays empty, as in the GSPS
        sc.Laterality = ""
    sc.BurnedInAnnotation = "NO"
    sc.ImageComments = (
        f"Grad-CAM of {model_info.name} {model_info.version}; P(fracture)={heatmap.probability:.4f}"
    )[:10240]
    derivation = Dataset()
    derivation.ReferencedSOPClassUID = header.SOPClassUID
    derivation.ReferencedSOPInstanceUID = header.SOPInstanceUID
    sc.SourceImageSequence = [derivation]
    return sc


def write_heatmap_output(
    source: Dataset,
    heatmap: Heatmap,
    model_info: ModelIdentity,
    out_dir: str | os.PathLike,
    instance_number: int = 1,
) -> Path:
    """Write one Grad-CAM Secondary Capture for ``source`` (a header) into its study folder.

    Used on its own while streaming, so a heatmap is written as soon as it exists instead of
    being held until the study's last image.
    """
    header = clean_study_headers([source])[0]
    study_uid = str(header.StudyInstanceUID)
    sc = build_heatmap_sc(header, heatmap, model_info,
                          series.placement("sc", study_uid, model_info, [heatmap.sop_uid], instance_number))
    folder = study_folder(out_dir, study_uid)
    return atomic_write_dataset(folder / object_file_name("SC", str(sc.SOPInstanceUID)), series.Stamp.now().apply(sc))


def write(study: StudyOutput) -> list[Path]:
    """One SC per heatmap handed to the study (a streaming run writes them as they come instead)."""
    by_uid = study.by_uid
    written = []
    for number, heatmap in enumerate(sorted(study.heatmaps, key=lambda h: h.sop_uid), start=1):
        header = by_uid.get(heatmap.sop_uid)
        if header is None:
            raise ValueError(f"heatmap for {heatmap.sop_uid!r}, which is not among the study sources")
        written.append(write_heatmap_output(header, heatmap, study.model_info, study.out_dir, instance_number=number))
    return written
