"""Build hook only (metadata lives in pyproject.toml): ship the MONAI bundle inside the wheel.

``bundles/fracture_classification/`` stays where MONAI users expect it in the repository; at
build time its distributable files (``monai_fracture.bundle_files.DISTRIBUTED``: configs,
model card, licences, schema and the shipped model) are copied to
``monai_fracture/bundles/fracture_classification/`` in the wheel, where
``monai_fracture.bundle_files.bundle_path()`` finds them after ``pip install``.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _bundle_files():
    """``monai_fracture/bundle_files.py`` loaded on its own (importing the package needs its dependencies)."""
    spec = importlib.util.spec_from_file_location("_bundle_files", ROOT / "monai_fracture" / "bundle_files.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithBundle(build_py):
    def run(self) -> None:
        super().run()
        files = _bundle_files()
        source = ROOT / "bundles" / files.BUNDLE_NAME
        target = Path(self.build_lib) / "monai_fracture" / "bundles" / files.BUNDLE_NAME
        shipped = files.distributed_files(source)
        if not any(p.name == "inference.json" for p in shipped) or not any(p.name == "model.pt" for p in shipped):
            raise FileNotFoundError(f"{source}: bundle configs or shipped model missing; cannot build a working wheel")
        for path in shipped:
            out = target / path.relative_to(source)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out)


setup(cmdclass={"build_py": BuildPyWithBundle})
