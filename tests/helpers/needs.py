"""What a test needs that `make test` installs: skip with the reason here, fail under ``CI=true``.

On a developer machine a missing tool or data set skips the test and says why. In CI the
Makefile has installed everything, so a missing piece means a broken setup: the run must fail
instead of passing with half the suite skipped (conftest.py turns any other skip into a failure too).
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(reason: str) -> NoReturn:
    """Skip (developer machine) or fail (``CI=true``) with ``reason``; usable at module level."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}: `make test` should have provided it", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def tool(name: str, package: str) -> str:
    """The path of command ``name`` (from system ``package``), or :func:`missing`."""
    found = shutil.which(name)
    if found is None:
        missing(f"{name} ({package}) not installed")
    return found
