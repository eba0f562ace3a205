"""DICOM Modality (0008,0060) values by what the pipeline does with them: one table for all layers."""

from __future__ import annotations

#: Projection radiography modalities (docs/architecture.md): scored by the radiograph model.
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "MG", "RF", "XA", "IO", "PX"})

__all__ = ["RADIOGRAPH_MODALITIES"]
