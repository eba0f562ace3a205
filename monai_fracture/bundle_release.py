"""The bundle in the MONAI model zoo layout, ready to publish.

The repository keeps the shipped model in ``models/fracatlas/`` so that training into
``models/`` never overwrites it; the model zoo expects it as ``models/model.pt`` (and
``models/model.ts``). ``build_zoo_bundle`` copies the distributable files and moves the
shipped model there. With ``base_url`` (where you will upload ``models/``) it also writes
``large_files.yml``, the zoo's list of weights to download, with their SHA-256, so the zoo's
repository can hold the bundle without the weights.

Command line: ``python -m monai_fracture.bundle_release OUT [--base-url URL]``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

from monai_fracture.bundle_files import SHIPPED_MODEL, bundle_path, copy_bundle

logger = logging.getLogger(__name__)

LARGE_FILES = "large_files.yml"
#: Files of the shipped model that the zoo downloads (``model_info.json`` is small and stays in git).
WEIGHTS = ("model.pt", "model.ts", "model.onnx")


def sha256(path: str | PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def large_files_yaml(bundle: str | PathLike, base_url: str) -> str:
    """``large_files.yml`` text for the weights under ``bundle/models`` served from ``base_url/models/``."""
    root = Path(bundle)
    lines = ["large_files:"]
    for name in WEIGHTS:
        path = root / "models" / name
        if not path.is_file():
            continue
        lines += [
            f'  - path: "models/{name}"',
            f'    url: "{base_url.rstrip("/")}/models/{name}"',
            f'    hash_val: "{sha256(path)}"',
            '    hash_type: "sha256"',
        ]
    if len(lines) == 1:
        raise FileNotFoundError(f"{root / 'models'}: none of {', '.join(WEIGHTS)} to list in {LARGE_FILES}")
    return "\n".join(lines) + "\n"


def build_zoo_bundle(dest: str | PathLike, base_url: str | None = None, source: str | PathLike | None = None) -> Path:
    """Write the bundle to ``dest`` in the model zoo layout; returns ``dest``.

    ``models/`` holds the shipped model (``model.pt``, ``model.ts``, ``model.onnx``,
    ``model_info.json``); ``large_files.yml`` is written only with ``base_url``.
    """
    src = Path(source) if source is not None else bundle_path()
    target = copy_bundle(dest, src)
    shipped = target / SHIPPED_MODEL
    if not (shipped / "model_info.json").is_file():
        raise FileNotFoundError(f"{src / SHIPPED_MODEL}: no shipped model to publish")
    for path in sorted(shipped.iterdir()):
        shutil.move(str(path), target / "models" / path.name)
    shipped.rmdir()
    if base_url:
        (target / LARGE_FILES).write_text(large_files_yaml(target, base_url), encoding="utf-8")
    logger.info("model zoo bundle written to %s", target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_fracture.bundle_release", description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="a new folder for the bundle")
    parser.add_argument("--base-url", help="where models/ will be served from (writes large_files.yml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    build_zoo_bundle(args.dest, args.base_url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
