"""The score CLI's start-up shortcuts: MONAI without the Deploy SDK, and exit without a GC sweep."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


def test_monai_imports_without_the_deploy_sdk_which_stays_importable():
    pytest.importorskip("monai.deploy", reason="monai-deploy-app-sdk not installed")
    result = _python("""
        import sys
        from monai_fracture.commands.score import import_monai_without_deploy
        import_monai_without_deploy()
        import monai.transforms
        assert "holoscan" not in sys.modules, "the Deploy SDK was imported"
        assert "monai.deploy" not in sys.modules
        import monai.deploy.core  # the deploy app still works in the same process
        print("ok", "holoscan" in sys.modules)
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["ok", "True"]


def test_entry_point_returns_the_exit_code():
    result = subprocess.run([sys.executable, "-m", "monai_fracture", "score", "--out", "/nonexistent"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "give at least one INPUT" in result.stderr
