"""Which datalist a bundle run uses: an explicit JSON, a dataset folder, or the synthetic set when asked.

Kept apart from the builders in :mod:`monai_fracture.data.datalist` because it is the one place
that decides between user data and generated data, and must refuse to guess.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pandas as pd

from monai_fracture.cache import cache_dir as default_cache_dir
from monai_fracture.data.datalist import (
    build_datalist,
    check_datalist,
    detect_layout,
    items_from_layout,
    items_from_table,
    load_datalist,
)
from monai_fracture.data.split import SPLIT_KEYS, log_summary

logger = logging.getLogger(__name__)


def _demo_ready(folder: Path, modality: str, seed: int) -> bool:
    from monai_fracture.data.synthetic import MANIFEST

    manifest = folder / MANIFEST
    if not manifest.is_file() or not (folder / "labels.csv").is_file():
        return False
    info = json.loads(manifest.read_text())
    return info.get("modality") == modality and info.get("seed") == seed


def resolve_datalist(
    dataset_dir: str | os.PathLike | None = None,
    datalist: str | os.PathLike | None = None,
    modality: str = "xr",
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    cache_dir: str | os.PathLike | None = None,
    fold: int | None = None,
    num_folds: int | None = None,
    check_pixels: bool = True,
    n: int | None = None,
    synthetic: bool = False,
    synthetic_dir: str | os.PathLike | None = None,
) -> dict[str, list[dict]]:
    """The datalist a bundle trains on: explicit JSON > a dataset folder > the synthetic set if asked for.

    1. ``datalist`` (a JSON file) wins; it is loaded through MONAI and checked for leaks.
    2. Else ``dataset_dir`` in any known layout is read and split (group-aware, seeded).
    3. Else, only with ``synthetic=True``, the synthetic set is generated into ``synthetic_dir``
       (or ``cache_dir/demo_<modality>_seed<seed>``) once and split.
    A datalist or folder that is missing or empty is an error naming it (a mistyped path must
    not quietly become a synthetic run), and so is configuring nothing without ``synthetic``.
    Image paths are absolute. Empty strings count as "not configured" (bundle JSON convenience).
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    kw = dict(val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, fold=fold, num_folds=num_folds)
    if datalist:
        if not Path(datalist).is_file():
            raise FileNotFoundError(f"{datalist}: datalist not found")
        loaded = load_datalist(datalist)
        if not any(loaded.values()):
            raise ValueError(f"{datalist}: the datalist has no items under {', '.join(SPLIT_KEYS)}")
        check_datalist(loaded, check_pixels=check_pixels, cache_dir=cache)
        log_summary(loaded)
        return loaded
    if dataset_dir:
        folder = Path(dataset_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: dataset_dir not found (or not a folder)")
        layout = detect_layout(folder)
        if layout is None:
            raise ValueError(f"{folder}: dataset_dir is empty")
        if layout == "datalist":
            return resolve_datalist(datalist=folder / "datalist.json", cache_dir=cache, check_pixels=check_pixels)
        items = items_from_layout(folder, layout)
        if not items:
            raise ValueError(f"{folder}: no labelled images found ({layout} layout)")
        logger.info("%s: %s layout, %d items", folder, layout, len(items))
        return build_datalist(items, check_pixels=check_pixels, cache_dir=cache, **kw)
    if not synthetic:
        raise ValueError(
            "no dataset configured: set dataset_dir (a folder in a known layout) or datalist (a JSON file); "
            "synthetic=True (--synthetic True) uses the generated phantom set instead"
        )
    from monai_fracture.data.synthetic import generate_demo_dataset

    target = Path(synthetic_dir) if synthetic_dir else cache / f"demo_{modality}_seed{seed}"
    if not _demo_ready(target, modality, seed):
        logger.warning("generating the synthetic demo set in %s (%s, seed %d)", target, modality, seed)
        # write next to the target and rename when complete: an interrupted run leaves no half set behind
        partial = target.parent / f".{target.name}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        generate_demo_dataset(partial, n=n, modality=modality, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
        if target.is_dir():
            target.rmdir()  # an empty leftover; a non-empty one makes this fail loudly
        os.replace(partial, target)
    items = items_from_table(pd.read_csv(target / "labels.csv"), target, group_from_dicom=False)
    return build_datalist(items, check_pixels=check_pixels, cache_dir=cache, **kw)
