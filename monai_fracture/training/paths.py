"""Where the bundle lives, so ``python -m monai.bundle run training`` works from any directory.

MONAI's parser does not tell a config where its file is. We take, in order: the environment
variable ``MONAI_FRACTURE_BUNDLE_ROOT``; the folder above ``configs/`` of the first
``--config_file`` on the command line; the bundle shipped in this source checkout; the current
directory. ``--bundle_root DIR`` on the command line overrides all of this.
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Sequence
from pathlib import Path

ENV_VAR = "MONAI_FRACTURE_BUNDLE_ROOT"
BUNDLE_NAME = "fracture_classification"


def _config_files_from_argv(argv: Sequence[str]) -> list[str]:
    for i, arg in enumerate(argv):
        value = None
        if arg == "--config_file" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config_file="):
            value = arg.split("=", 1)[1]
        if value is None:
            continue
        value = value.strip()
        if value.startswith("["):
            try:
                return [str(v) for v in ast.literal_eval(value)]
            except (ValueError, SyntaxError):
                return []
        return [value]
    return []


def bundle_root_from_config(config_file: str | os.PathLike) -> Path:
    """The bundle folder of a config file: the parent of ``configs/``, else the file's folder."""
    folder = Path(config_file).resolve().parent
    return folder.parent if folder.name == "configs" else folder


def default_bundle_root(argv: Sequence[str] | None = None) -> str:
    """The bundle root for configs that do not get ``--bundle_root`` (see the module docstring)."""
    if os.environ.get(ENV_VAR):
        return str(Path(os.environ[ENV_VAR]).resolve())
    files = _config_files_from_argv(sys.argv if argv is None else argv)
    if files and Path(files[0]).is_file():
        return str(bundle_root_from_config(files[0]))
    checkout = Path(__file__).resolve().parents[2] / "bundles" / BUNDLE_NAME
    if (checkout / "configs").is_dir():
        return str(checkout)
    return str(Path.cwd())
