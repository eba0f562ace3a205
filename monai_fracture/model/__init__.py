"""A trained model and the ways to run it: the model folder (``package``), runtime backends
(``backend_table``, ``backends``, ``backend_choice``, ``backend_cache``), export to ONNX/TorchScript
(``export``), Grad-CAM (``gradcam``) and the ``Classifier`` that scoring, the PACS node and the Deploy
operator use.

The names below load on first use (PEP 562), so ``monai_fracture.model.backend_table`` stays
importable without PyTorch (the CLI renders ``--help`` from it).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Classifier": "classifier",
    "default_model_path": "classifier",
    "LoadedModel": "package",
    "ModelInfo": "package",
    "ModelPackageError": "package",
    "load_model": "package",
    "save_model": "package",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
