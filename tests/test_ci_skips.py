"""Under CI=true nothing may skip: the conftest hook and tests/helpers/needs.py, run on a small inner session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

INNER = '''
import pytest
from helpers.needs import tool

pytest.importorskip("no_such_module_for_this_test")
'''

CASES = '''
import pytest
from helpers.needs import tool

def test_passes():
    pass

def test_needs_the_corpus(dicom_corpus):
    pass

@pytest.mark.skipif(True, reason="a skipif marker")
def test_skipif():
    pass

def test_needs_a_tool():
    tool("no-such-validator-xyz", "dicom3tools")

@pytest.mark.xfail(reason="known", strict=True)
def test_xfail():
    assert False
'''


def run_inner(tmp_path: Path, ci: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_cases.py").write_text(CASES)
    (tmp_path / "test_import.py").write_text(INNER)
    env = {**os.environ, "CI": ci, "MONAI_FRACTURE_SHARED_DATA": str(tmp_path / "no-shared-data"),
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-rA", "-q", "--continue-on-collection-errors",
               "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path)]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)


def test_a_developer_machine_skips_with_the_reason(tmp_path: Path) -> None:
    result = run_inner(tmp_path, ci="")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 4 skipped, 1 xfailed" in result.stdout, result.stdout
    assert f"real DICOM corpus not found at {tmp_path / 'no-shared-data' / 'dicom'}" in result.stdout
    assert "no-such-validator-xyz (dicom3tools) not installed" in result.stdout


@pytest.mark.parametrize("ci", ["true", "1"])
def test_ci_fails_every_skip_with_the_reason(tmp_path: Path, ci: str) -> None:
    result = run_inner(tmp_path, ci=ci)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "1 failed, 1 passed, 1 xfailed, 3 errors" in out, out  # setup-time failures count as errors
    assert f"CI=true and real DICOM corpus not found at {tmp_path / 'no-shared-data' / 'dicom'}" in out
    assert "CI=true and no-such-validator-xyz (dicom3tools) not installed" in out
    assert "CI=true forbids skips (`make test` installs what the tests need)" in out and "a skipif marker" in out
    assert "no_such_module_for_this_test" in out  # the module-level importorskip: a collection error
