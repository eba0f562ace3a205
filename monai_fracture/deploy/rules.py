"""Series selection rules for the SDK's ``DICOMSeriesSelectorOperator``: what the model can read.

Kept as JSON text (the selector's own format) so that a site can replace it with a file through
``MONAI_FRACTURE_SELECTION_RULES`` without touching code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

RULES_ENV = "MONAI_FRACTURE_SELECTION_RULES"

# One selection per modality the model takes; every matching series of a study is scored.
SELECTION_RULES = json.dumps(
    {
        "selections": [
            {"name": "Radiograph (CR)", "conditions": {"Modality": "(?i)^CR$"}},
            {"name": "Radiograph (DX)", "conditions": {"Modality": "(?i)^DX$"}},
            {"name": "CT", "conditions": {"Modality": "(?i)^CT$"}},
        ]
    },
    indent=1,
)


def selection_rules() -> str:
    """The rules JSON: the file named by ``MONAI_FRACTURE_SELECTION_RULES`` if set, else the default."""
    path = os.environ.get(RULES_ENV)
    if not path:
        return SELECTION_RULES
    text = Path(path).read_text(encoding="utf-8")
    try:
        rules = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid selection rules JSON: {err}") from err
    if not isinstance(rules, dict) or not rules.get("selections"):
        raise ValueError(f"{path}: selection rules need a non-empty 'selections' list")
    return text
