"""manifest.json: what a run did, with what, how fast, and which files it wrote."""

from __future__ import annotations

import datetime as _dt
import json
import platform
from pathlib import Path
from typing import Any

from monai_fracture.reports.files import atomic_write_bytes
from monai_fracture.scoring.classifier import Classifier


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    import highdicom
    import monai
    import numpy as np
    import pydicom
    import torch

    from monai_fracture import __version__

    return {
        "monai-fracture": __version__,
        "monai": monai.__version__,
        "torch": torch.__version__,
        "pydicom": pydicom.__version__,
        "highdicom": highdicom.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def model_entry(classifier: Classifier, threshold: float | None = None) -> dict[str, Any]:
    """The model as the manifest names it; ``threshold`` is the run's (default: the classifier's)."""
    info = classifier.info
    return {
        "id": classifier.model_id,
        "name": info.name,
        "version": info.version,
        "threshold": classifier.threshold if threshold is None else threshold,
        "model_threshold": float(info.threshold),
        "threshold_rule": getattr(info, "threshold_rule", None),
        "path": str(classifier.model.path),
        "format": classifier.model.format,
        "backend": classifier.backend_choice.to_dict() if classifier.backend_choice else None,
    }


def output_files_entry(files: dict[str, dict[str, list[str]]]) -> dict[str, list[str]]:
    """Output name -> every file the run reports (relative to the output folder), sorted."""
    by_name: dict[str, set[str]] = {}
    for outputs in files.values():
        for name, paths in outputs.items():
            by_name.setdefault(name, set()).update(paths)
    return {name: sorted(paths) for name, paths in sorted(by_name.items())}


def write_manifest(path: Path, manifest: dict[str, Any]) -> Path:
    return atomic_write_bytes(path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
