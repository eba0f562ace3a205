"""Folders the bundle configs use, relative to ``bundle_root``.

``bundle_root`` follows the MONAI model zoo convention: ``"."`` in the configs (the bundle
folder when run from there) and ``--bundle_root DIR`` on the command line; nothing is guessed
from ``sys.argv``, so a ``ConfigParser`` or ``create_workflow`` on a copied bundle resolves
paths inside that copy.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

MODEL_INFO = "model_info.json"


def model_dir(bundle_root: str | os.PathLike) -> str:
    """The model evaluation and inference load: the first folder holding ``model_info.json`` of

    ``bundle_root/models`` (what training writes, and where the model zoo puts ``model.pt``),
    ``bundle_root/models/fracatlas`` (the shipped real-data model), or the shipped model of the
    installed package. Without any, ``bundle_root/models`` (loading it then names the folder).
    """
    from monai_fracture.bundle_files import shipped_model_dir

    models = Path(bundle_root) / "models"
    candidates = [models, models / "fracatlas"]
    try:
        candidates.append(shipped_model_dir())
    except FileNotFoundError:
        pass
    for candidate in candidates:
        if (candidate / MODEL_INFO).is_file():
            if candidate != models:
                logger.info("no model in %s: using %s", models, candidate)
            return str(candidate)
    return str(models)
