"""What bundle inference scores, and why it leaves the other files out.

A folder handed to ``inference.json`` is walked and every file's header is looked at the way
``monai-fracture score`` does it (``monai_fracture.scoring.catalog.scan_file``): images the model
can read become items, everything else (our own SR and KOS files, CSVs, unsupported modalities)
becomes a ``skipped`` or ``failed`` row with the reason, instead of a traceback halfway through.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _from_datalist(datalist: str, datalist_key: str | None) -> list[dict[str, Any]]:
    path = Path(datalist)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: datalist not found")
    data = json.loads(path.read_text())
    base = path.resolve().parent
    keys = [datalist_key] if datalist_key else [k for k, v in data.items() if isinstance(v, list)]
    items = []
    for key in keys:
        if key not in data:
            raise KeyError(f"{path}: no list {key!r} in this datalist (it has {sorted(data)})")
        for item in data[key]:
            image = item["image"] if isinstance(item, Mapping) else item
            items.append({"image": image if Path(image).is_absolute() else str(base / image)})
    if not items:
        raise ValueError(f"{path}: no items under {keys}")
    return items


def inference_plan(
    dataset_dir: str | None = None,
    datalist: str | None = None,
    datalist_key: str | None = None,
    synthetic: bool = False,
    demo_dir: str | None = None,
    demo_n: int = 16,
    modality: str = "xr",
    seed: int = 2,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """``(items, skipped)``: ``{"image": path}`` to score and ``{"path", "status", "reason"}`` for the rest.

    The input is a datalist JSON (``datalist_key``, else every list in it, taken as given), or a
    folder or single file (``dataset_dir``). With neither, only ``synthetic=True`` scores a small
    generated demo set (in ``demo_dir``); otherwise that is an error, as is a path that does not
    exist, an empty folder, or a folder without one scorable image.
    """
    if datalist:
        return _from_datalist(datalist, datalist_key), []
    if not dataset_dir:
        if not synthetic:
            raise ValueError("inference needs dataset_dir (a folder or file) or datalist (a JSON file); "
                             "--synthetic True scores a generated demo set instead")
        if not demo_dir:
            raise ValueError("synthetic inference needs demo_dir")
        if not (Path(demo_dir) / "labels.csv").is_file():
            from monai_fracture.data.synthetic import generate_demo_dataset

            logger.warning("synthetic=True: scoring a synthetic demo set generated in %s", demo_dir)
            generate_demo_dataset(demo_dir, n=demo_n, modality=modality, seed=seed)
        dataset_dir = demo_dir
    from monai_fracture.scoring.catalog import scan_file, walk_inputs

    root = Path(dataset_dir)
    if not root.exists():
        raise FileNotFoundError(f"{root}: dataset_dir not found")
    paths = walk_inputs([root])
    if not paths:
        raise ValueError(f"{root}: dataset_dir is empty")
    items: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for path in paths:
        record = scan_file(path)
        if record.status is None and record.family != modality:
            record.status = "skipped"
            record.reason = f"unsupported_modality: a {record.family} image, the model reads {modality}"
        if record.status is None:
            items.append({"image": path})
        else:
            skipped.append({"path": path, "status": record.status, "reason": record.reason})
    for row in skipped:
        logger.info("%s: %s (%s)", row["path"], row["status"], row["reason"])
    if not items:
        reasons = "; ".join(f"{Path(r['path']).name}: {r['reason']}" for r in skipped[:5])
        raise ValueError(f"{root}: no image the model can score among {len(paths)} files ({reasons})")
    logger.info("%s: %d images to score, %d files skipped or failed", root, len(items), len(skipped))
    return items, skipped
