"""Load what the first SR of a process would otherwise load on the critical path.

highdicom checks every object it builds against the standard's IOD and module tables, which it
reads from JSON files the first time (cached for the life of the process). In a report worker
that costs more than building and writing a study's objects, and in a one-study run (one CR, a
PACS study, a MONAI Deploy run) the main process waits for it. Run as the first job of a
forked report worker, it overlaps the main process's model load and inference instead.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

#: Comprehensive 3D SR Storage: the class our TID 1500 SR is (its tables are the IOD and module maps).
SR_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.88.34"


def load_standard_tables() -> None:
    """Read highdicom's standard tables now (no-op where highdicom has moved them; logged)."""
    try:
        from highdicom._standard_utils import is_attribute_in_iod

        is_attribute_in_iod("ContentDate", SR_SOP_CLASS_UID)
    except (ImportError, AttributeError, KeyError) as err:  # a private helper: never fail a run over it
        logger.debug("highdicom tables not preloaded: %s", err)


__all__ = ["load_standard_tables"]
