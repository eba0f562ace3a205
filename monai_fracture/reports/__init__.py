"""DICOM outputs through highdicom: TID 1500 SR, Key Object Selection, Grad-CAM Secondary Captures.

Everything here is independent of the model: it turns decisions (``ImageResult``) and source
headers into DICOM objects a PACS files into the source study.
"""

from monai_fracture.reports.evidence import EvidenceError, clean_source_header, clean_study_headers
from monai_fracture.reports.files import atomic_write_bytes, atomic_write_dataset, derived_uid, stable_hash
from monai_fracture.reports.keyimage import build_heatmap_sc, build_key_object_selection, overlay_rgb
from monai_fracture.reports.results import AlgorithmIdentity, Heatmap, ImageResult, ModelIdentity
from monai_fracture.reports.sr import build_fracture_sr
from monai_fracture.reports.study import write_heatmap_output, write_study_outputs, write_study_outputs_from_files

__all__ = [
    "AlgorithmIdentity",
    "EvidenceError",
    "Heatmap",
    "ImageResult",
    "ModelIdentity",
    "atomic_write_bytes",
    "atomic_write_dataset",
    "build_fracture_sr",
    "build_heatmap_sc",
    "build_key_object_selection",
    "clean_source_header",
    "clean_study_headers",
    "derived_uid",
    "overlay_rgb",
    "stable_hash",
    "write_heatmap_output",
    "write_study_outputs",
    "write_study_outputs_from_files",
]
