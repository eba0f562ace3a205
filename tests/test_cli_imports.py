"""What ``monai-fracture score`` imports: the cold-start guard (an import list, not a time).

A one-shot scoring process pays for every package it imports; MONAI's package walk would
otherwise bring in Ignite, MLflow, matplotlib, scipy, CuPy, the MONAI Deploy SDK and more
(docs/performance.md#cold-start). The program is run as users run it (``cli.entry``) in a
fresh interpreter on one generated radiograph, and the test reads the interpreter's
``sys.modules`` afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

#: Top-level packages a default scoring run must not import (none of them scores an image).
FORBIDDEN = ("holoscan", "mlflow", "ignite", "torchvision", "ray", "tensorboard", "matplotlib", "pandas",
             "sklearn", "skimage", "cupy", "sympy", "jsonschema", "tifffile")
#: MONAI subpackages for training, deployment and tracking: never on the scoring path.
FORBIDDEN_MONAI = ("monai.deploy", "monai.handlers", "monai.engines", "monai.fl", "monai.auto3dseg",
                   "monai.apps.pathology", "monai.apps.detection")

DRIVER = textwrap.dedent("""
    import json, sys
    record, sys.argv = sys.argv[1], ["monai-fracture", "score", *sys.argv[2:]]
    from monai_fracture.cli import entry
    code = entry()
    loaded = sorted(sys.modules)
    import pandas, scipy.ndimage, jsonschema, tifffile  # the skipped packages stay importable for code that asks for them
    with open(record, "w") as handle:
        json.dump({"code": code, "modules": loaded}, handle)
""")


def _score(image: Path, out: Path, record: Path, *extra: str) -> dict:
    done = subprocess.run([sys.executable, "-c", DRIVER, str(record), str(image), "--out", str(out), "--no-progress", *extra],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(record.read_text())


@pytest.fixture(scope="module")
def radiograph(tmp_path_factory) -> Path:
    from monai_fracture.data.synthetic import generate_demo_dataset

    folder = tmp_path_factory.mktemp("one")
    generate_demo_dataset(folder, n=1, modality="xr", seed=0, size="256x256", compress=False)
    (image,) = sorted(p for p in folder.rglob("image_*") if p.is_file())
    return image


def test_default_scoring_imports_nothing_it_does_not_use(radiograph, tmp_path):
    # threshold 0: the image is positive, so SR, KOS and the GSPS (with its Grad-CAM region) are all written
    record = _score(radiograph, tmp_path / "out", tmp_path / "modules.json", "--threshold", "0")
    assert record["code"] == 0
    written = sorted(p.name[:2] for p in (tmp_path / "out" / "dicom").rglob("*.dcm"))
    assert written == ["KO", "PR", "SR"]
    modules = set(record["modules"])
    roots = {name.split(".")[0] for name in modules}
    assert not roots & set(FORBIDDEN), sorted(roots & set(FORBIDDEN))
    assert not {m for m in modules if m.startswith(FORBIDDEN_MONAI)}, sorted(m for m in modules if m.startswith(FORBIDDEN_MONAI))
    assert {"torch", "monai", "highdicom", "pydicom"} <= roots  # it did score and write DICOM
    # one image is one batch: the backend checked at export, no fp32 agreement pass (model.small_run)
    backend = json.loads((tmp_path / "out" / "manifest.json").read_text())["model"]["backend"]
    assert (backend["name"], backend["how"]) == ("onnx", "export-checked")


def test_in_process_callers_keep_the_full_monai_import(radiograph, tmp_path):
    """``cli.main`` inside a longer process (tests, notebooks) must not leave MONAI half-initialised."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from monai_fracture.cli import main
        assert main(["score", {str(radiograph)!r}, "--out", {str(tmp_path / 'out')!r}, "--no-progress", "--no-dicom"]) == 0
        from monai.utils.enums import EventEnum
        import ignite.engine
        assert issubclass(EventEnum, ignite.engine.EventEnum), "MONAI was imported without Ignite"
        """)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


DEPLOY_DRIVER = textwrap.dedent("""
    import json, runpy, sys
    record, sys.argv = sys.argv[1], ["monai_fracture.deploy", *sys.argv[2:]]
    runpy.run_module("monai_fracture.deploy", run_name="__main__", alter_sys=True)
    with open(record, "w") as handle:
        json.dump(sorted(sys.modules), handle)
""")


def test_the_deploy_app_imports_the_sdk_but_not_the_training_stack(radiograph, tmp_path):
    """A MAP starts the app once per study: it skips the same packages as ``score``, keeping the App SDK."""
    pytest.importorskip("holoscan", reason="monai-deploy-app-sdk not installed (pip install 'monai-fracture[deploy]')")
    from monai_fracture.model.classifier import default_model_path

    record, out = tmp_path / "modules.json", tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", DEPLOY_DRIVER, str(record), "-i", str(radiograph.parent), "-o",
                           str(out), "-m", str(default_model_path())], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(out.rglob("SR_*.dcm")), "the app wrote no SR"
    modules = set(json.loads(record.read_text()))
    roots = {name.split(".")[0] for name in modules}
    assert "holoscan" in roots and "monai.deploy" in modules
    assert not roots & (set(FORBIDDEN) - {"holoscan", "cupy"}), sorted(roots & set(FORBIDDEN))
    training = {m for m in modules if m.startswith(FORBIDDEN_MONAI) and not m.startswith("monai.deploy")}
    assert not training, sorted(training)
