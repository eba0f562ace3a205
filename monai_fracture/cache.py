"""The one cache folder: measured backend choices, pixel hashes of datasets, generated demo sets.

``$MONAI_FRACTURE_CACHE`` when set, else ``$XDG_CACHE_HOME/monai-fracture`` (the XDG base-directory
rule), else ``~/.cache/monai-fracture``. Everything in it can be rebuilt; deleting it is safe.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

CACHE_ENV = "MONAI_FRACTURE_CACHE"
NAME = "monai-fracture"
#: Where releases before the single cache folder kept pixel hashes and demo sets.
LEGACY_NAME = "monai_fracture"


def cache_dir() -> Path:
    """The cache folder (not created). A legacy ``monai_fracture`` sibling is renamed to it once."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = base / NAME
    legacy = base / LEGACY_NAME
    if legacy.is_dir() and not legacy.is_symlink() and not folder.exists():
        try:
            os.replace(legacy, folder)
            logger.info("moved the cache folder %s to %s", legacy, folder)
        except OSError as err:  # another process won the race, or a read-only home: use the new name anyway
            logger.debug("could not move %s to %s: %s", legacy, folder, err)
    return folder


__all__ = ["CACHE_ENV", "cache_dir"]
