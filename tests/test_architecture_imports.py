"""The layering in docs/architecture.md holds: imports point one way, no cycles, small modules.

The contract lives in pyproject.toml (``[tool.importlinter]``); ``lint-imports`` is the check anyone
can run from the repository root. These tests run it on this checkout, and on a copy with planted
violations to show that it catches them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from helpers.needs import missing

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "monai_fracture"
MAX_MODULE_LINES = 450


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the package under ``root`` (its pyproject.toml), never the installed copy."""
    command = Path(sys.executable).with_name("lint-imports")
    if not command.is_file():
        found = shutil.which("lint-imports")
        if found is None:
            missing("lint-imports (import-linter, in the test extra) not installed")
        command = Path(found)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([str(command), "--no-cache", "--no-logo"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_imports_follow_the_layers_and_form_no_cycle() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout, result.stdout


def test_planted_violations_break_the_contracts(tmp_path: Path) -> None:
    """An upward import, a cycle and an unplaced module: each is named in the report."""
    shutil.copytree(REPO / PACKAGE, tmp_path / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    package = tmp_path / PACKAGE
    with (package / "io" / "errors.py").open("a") as f:  # io is the bottom layer: it may not know scoring
        f.write("\n\ndef _planted() -> None:\n    from monai_fracture.scoring import catalog  # noqa: F401\n")
    with (package / "data" / "split.py").open("a") as f:  # datalist imports split: a cycle
        f.write("\n\ndef _planted() -> None:\n    from monai_fracture.data import datalist  # noqa: F401\n")
    (package / "unplaced.py").write_text('"""A new top-level module that the contract does not place."""\n')

    result = lint_imports(tmp_path)
    out = " ".join((result.stdout + result.stderr).split())  # the report wraps long lines
    assert result.returncode == 1, out
    assert "monai_fracture.unplaced" in out, out  # exhaustive: every top-level module has a layer
    (package / "unplaced.py").unlink()

    result = lint_imports(tmp_path)
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 1, out
    assert "Contracts: 0 kept, 2 broken." in out, out
    assert "monai_fracture.io is not allowed to import monai_fracture.scoring" in out, out
    assert "monai_fracture.io.errors -> monai_fracture.scoring" in out, out  # the chain, with file and line
    assert "No cycles are allowed in monai_fracture.data" in out and ".split -> .datalist" in out, out


def module_lengths(root: Path) -> dict[str, int]:
    return {str(path.relative_to(root)): len(path.read_text(encoding="utf-8").splitlines())
            for path in sorted((root / PACKAGE).rglob("*.py"))}


def test_no_module_of_the_package_is_over_450_lines() -> None:
    lengths = module_lengths(REPO)
    assert len(lengths) > 50, "the package was not found"
    too_long = {name: n for name, n in lengths.items() if n > MAX_MODULE_LINES}
    assert not too_long, f"split these modules (one job each, at most {MAX_MODULE_LINES} lines): {too_long}"

