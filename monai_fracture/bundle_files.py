"""Where the MONAI bundle is: in a source checkout, or inside the installed package.

A wheel carries ``bundles/fracture_classification/`` as package data under
``monai_fracture/bundles/`` (copied there at build time, see ``setup.py``), so the bundle's
configs and the shipped FracAtlas model work after ``pip install`` without the source tree.
In a checkout (and an editable install) the repository's own ``bundles/`` folder is used.

Command line: ``python -m monai_fracture.bundle_files [path|copy DEST]``: print the bundle
folder, or copy it to a writable place (configs, model card, licences, schema, shipped model).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Sequence
from importlib import resources
from os import PathLike
from pathlib import Path

logger = logging.getLogger(__name__)

BUNDLE_NAME = "fracture_classification"
SHIPPED_MODEL = Path("models") / "fracatlas"
#: What a distributed bundle holds (relative to its folder); outputs (models/ of your own
#: training, logs/, eval/, data/) are left out.
DISTRIBUTED = ("LICENSE", "configs", "docs", "schema", str(SHIPPED_MODEL))


def _installed_bundle() -> Path | None:
    folder = Path(str(resources.files("monai_fracture"))) / "bundles" / BUNDLE_NAME
    return folder if (folder / "configs").is_dir() else None


def _checkout_bundle() -> Path | None:
    folder = Path(__file__).resolve().parents[1] / "bundles" / BUNDLE_NAME
    return folder if (folder / "configs").is_dir() else None


def bundle_path() -> Path:
    """The bundle folder: the installed package data, else this source checkout's ``bundles/``."""
    folder = _installed_bundle() or _checkout_bundle()
    if folder is None:
        raise FileNotFoundError(
            f"bundle {BUNDLE_NAME!r} found neither in the installed package "
            f"({Path(str(resources.files('monai_fracture'))) / 'bundles'}) nor in a source checkout"
        )
    return folder


def shipped_model_dir() -> Path:
    """The real-data model that ships with the bundle (trained on FracAtlas)."""
    return bundle_path() / SHIPPED_MODEL


def distributed_files(bundle: str | PathLike) -> list[Path]:
    """Every file of ``bundle`` that belongs to a distribution (see ``DISTRIBUTED``), sorted."""
    root = Path(bundle)
    found: list[Path] = []
    for name in DISTRIBUTED:
        entry = root / name
        if entry.is_file():
            found.append(entry)
        elif entry.is_dir():
            found += [p for p in entry.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return sorted(found)


def copy_bundle(dest: str | PathLike, source: str | PathLike | None = None) -> Path:
    """Copy the distributable bundle files to ``dest`` (which must not exist yet); returns ``dest``."""
    src = Path(source) if source is not None else bundle_path()
    target = Path(dest)
    if target.exists():
        raise FileExistsError(f"{target}: already exists; choose a new folder")
    for path in distributed_files(src):
        out = target / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, out)
    logger.info("copied bundle %s to %s", src, target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_fracture.bundle_files", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("path", help="print the bundle folder")
    copy = sub.add_parser("copy", help="copy the bundle to a new, writable folder")
    copy.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    folder = copy_bundle(args.dest) if args.command == "copy" else bundle_path()
    sys.stdout.write(f"{folder}\n")  # the one output of the command, for shell use: B=$(python -m ...)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
