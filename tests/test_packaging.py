"""``pip install`` gives a working tool: a wheel built from the sources, installed in a fresh venv.

The wheel must carry the bundle (configs, licences, schema) and the shipped model as package
data, and ``py.typed``; installed away from the source tree, ``monai-fracture score`` scores a
generated study with the shipped model and the bundle's ``inference.json`` runs from the
installed package. The fresh venv borrows this environment's dependencies (torch, MONAI ...)
through a ``.pth`` file, so nothing is downloaded.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from monai_fracture.bundle_files import BUNDLE_NAME, copy_bundle

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PYPI_FILE_LIMIT = 100 * 1024 * 1024  # PyPI's default upload limit per file
SHIPPED_NAME = "fracture_classification_fracatlas@0.2.0"


def _env() -> dict[str, str]:
    """No PYTHONPATH: the installed package must be what runs, not a source tree."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONWARNINGS="ignore", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"), MONAI_FRACTURE_MODEL="")
    return env


def _sources(dest: Path) -> Path:
    """What a clean clone holds for the build: metadata, the package and the bundle's distributable files."""
    dest.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "monai_fracture", dest / "monai_fracture", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    copy_bundle(dest / "bundles" / BUNDLE_NAME, REPO / "bundles" / BUNDLE_NAME)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(wheel, venv): the wheel built offline, installed into a new venv outside the repository."""
    base = tmp_path_factory.mktemp("packaging")
    src = _sources(base / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(base / "dist"), str(src)], check=True, env=_env(), capture_output=True, timeout=600)
    (wheel,) = (base / "dist").glob("monai_fracture-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--ignore-installed", "-q", str(wheel)], check=True, env=_env(), capture_output=True, timeout=600)
    return wheel, venv


def test_wheel_carries_the_bundle_the_shipped_model_and_py_typed(installed):
    wheel, _ = installed
    assert wheel.stat().st_size < PYPI_FILE_LIMIT, f"{wheel.stat().st_size / 2**20:.1f} MiB"
    names = set(zipfile.ZipFile(wheel).namelist())
    bundle = f"monai_fracture/bundles/{BUNDLE_NAME}"
    for name in ("configs/inference.json", "configs/train.json", "configs/metadata.json", "configs/logging.conf",
                 "LICENSE", "docs/README.md", "docs/data_license.txt", "schema/meta_schema.json",
                 "models/fracatlas/model.pt", "models/fracatlas/model_info.json"):
        assert f"{bundle}/{name}" in names, name
    assert "monai_fracture/py.typed" in names
    assert not any(n.startswith(f"{bundle}/data/") or n.startswith(f"{bundle}/logs/") for n in names)


def test_installed_score_uses_the_shipped_model_without_the_source_tree(installed, tmp_path):
    from monai_fracture.data.synthetic import generate_demo_dataset

    _, venv = installed
    study = tmp_path / "study"
    generate_demo_dataset(study, n=3, modality="xr", seed=7)
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import monai_fracture; print(monai_fracture.__file__)"],
                           cwd=tmp_path, env=_env(), capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(venv), where
    result = subprocess.run([str(venv / "bin" / "monai-fracture"), "score", str(study), "--out", str(tmp_path / "out")],
                            cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(tmp_path / "out" / "results.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["status"] == "scored"]
    assert len(rows) == len(list(study.rglob("*.dcm"))) >= 3
    assert {r["model"] for r in rows} == {SHIPPED_NAME}
    assert all(0.0 <= float(r["probability"]) <= 1.0 for r in rows)


def test_installed_bundle_inference_runs_from_the_package(installed, tmp_path):
    from monai_fracture.data.synthetic import generate_demo_dataset

    _, venv = installed
    study = tmp_path / "study"
    generate_demo_dataset(study, n=2, modality="xr", seed=8)
    configs = next(venv.glob(f"lib/python*/site-packages/monai_fracture/bundles/{BUNDLE_NAME}/configs"))
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "monai.bundle", "run", "inference", "--meta_file",
         str(configs / "metadata.json"), "--config_file", str(configs / "inference.json"),
         "--bundle_root", str(tmp_path / "run"), "--dataset_dir", str(study)],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert str(configs.parent / "models" / "fracatlas") in result.stdout + result.stderr  # the installed model
    with open(tmp_path / "run" / "eval" / "inference" / "predictions.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["status"] == "scored"]
    assert len(rows) == len(list(study.rglob("*.dcm"))) >= 2
