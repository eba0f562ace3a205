"""DICOM outputs through highdicom, one module per object family: ``sr`` (TID 1500), ``ko`` (Key Object
Selection), ``pr`` (Grayscale Softcopy Presentation State), ``sc`` (Grad-CAM Secondary Captures).

Everything here is independent of the model: it turns decisions (``ImageResult``) and source
headers into DICOM objects a PACS files into the source study.
"""

from monai_fracture.reports.evidence import EvidenceError, clean_source_header, clean_study_headers
from monai_fracture.reports.files import atomic_write_dataset, derived_uid
from monai_fracture.reports.ko import build_key_object_selection
from monai_fracture.reports.pr import build_fracture_gsps
from monai_fracture.reports.results import AlgorithmIdentity, EvidenceRegion, Heatmap, ImageResult, ModelIdentity
from monai_fracture.reports.sc import build_heatmap_sc, overlay_rgb
from monai_fracture.reports.sr import build_fracture_sr
from monai_fracture.reports.study import (
    DEFAULT_OUTPUTS,
    OUTPUTS,
    parse_outputs,
    write_heatmap_output,
    write_study_outputs,
    write_study_outputs_from_files,
)

__all__ = [
    "DEFAULT_OUTPUTS",
    "OUTPUTS",
    "AlgorithmIdentity",
    "EvidenceError",
    "EvidenceRegion",
    "Heatmap",
    "ImageResult",
    "ModelIdentity",
    "atomic_write_dataset",
    "build_fracture_gsps",
    "build_fracture_sr",
    "build_heatmap_sc",
    "build_key_object_selection",
    "clean_source_header",
    "clean_study_headers",
    "derived_uid",
    "overlay_rgb",
    "parse_outputs",
    "write_heatmap_output",
    "write_study_outputs",
    "write_study_outputs_from_files",
]
