"""DICOM outputs through highdicom, one module per object family: ``sr`` (TID 1500), ``ko`` (Key Object
Selection), ``pr`` (Grayscale Softcopy Presentation State), ``sc`` (Grad-CAM Secondary Captures), each
registered by name in ``outputs`` (``--outputs sr,kos,pr,sc``) and returning the files it wrote.

Everything here is independent of the model: it turns decisions (``ImageResult``) and source
headers into DICOM objects a PACS files into the source study.
"""

import importlib
from typing import Any

# name -> submodule: imported on first use, so listing the outputs (``--outputs`` help) costs no highdicom import
_EXPORTS = {
    "EvidenceError": "evidence", "clean_source_header": "evidence", "clean_study_headers": "evidence",
    "atomic_write_bytes": "files", "atomic_write_dataset": "files", "derived_uid": "files", "stable_hash": "files",
    "build_key_object_selection": "ko",
    "build_fracture_gsps": "pr",
    "AlgorithmIdentity": "results", "EvidenceRegion": "results", "Heatmap": "results", "ImageResult": "results",
    "ModelIdentity": "results", "decide": "results",
    "build_heatmap_sc": "sc", "overlay_rgb": "sc", "write_heatmap_output": "sc",
    "build_fracture_sr": "sr",
    "DEFAULT_OUTPUTS": "outputs", "OUTPUTS": "outputs", "OUTPUT_WRITERS": "outputs", "OutputWriter": "outputs",
    "outputs_help": "outputs", "parse_outputs": "outputs", "register_output": "outputs",
    "write_outputs": "study", "write_outputs_from_files": "study", "write_study_outputs": "study",
    "write_study_outputs_from_files": "study",
    "StudyOutput": "writer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
