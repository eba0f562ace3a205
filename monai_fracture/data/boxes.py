"""Fracture boxes in datalists: which items carry a YOLO label file, and whether it fits the image.

Box-guided training (:mod:`monai_fracture.training.box_iteration`) needs, per fractured image, the
boxes and the shape of the image they were drawn on. Datalist items carry them as ``"boxes"``
(path of a YOLO ``class cx cy w h`` file, normalised coordinates) and ``"boxes_shape"``
(``[rows, cols]``). A missing key means no boxes. Both keys exist only in datalists: the training
transforms turn them into a mask, and every other chain drops them before batching.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

logger = logging.getLogger(__name__)

BOXES_KEY = "boxes"
BOXES_SHAPE_KEY = "boxes_shape"
BOX_KEYS = (BOXES_KEY, BOXES_SHAPE_KEY)  # datalist-only keys: turned into a mask or dropped before batching
YOLO_FOLDERS = ("annotations/yolo", "Annotations/YOLO")  # FracAtlas as in shared/data, and upstream


def _stored_shape(path: str | os.PathLike) -> tuple[int, int] | None:
    """(rows, cols) of a PNG/JPEG as stored (before any EXIF rotation), from its header; None if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - not a raster image Pillow knows: no shape, so no boxes
        return None
    return height, width


def attach_yolo_boxes(
    items: list[dict], root: str | os.PathLike, shapes: Sequence[Sequence[int] | None] | None = None
) -> list[dict]:
    """Set ``boxes`` (and ``boxes_shape``) on fractured items whose YOLO file in ``root/annotations/yolo`` has boxes.

    The file is ``<image stem>.txt``; ``shapes`` gives the (rows, cols) each image was annotated
    at (FracAtlas ``labels.csv`` height/width), else the stored size is read from the file header.
    An item without a usable file, or of an unknown shape, gets no box keys. No YOLO folder: items unchanged.
    """
    root = Path(root)
    folder = next((root / rel for rel in YOLO_FOLDERS if (root / rel).is_dir()), None)
    if folder is None:
        return items
    with_boxes = 0
    for index, item in enumerate(items):
        if int(item["label"]) != 1:
            continue
        box_file = folder / f"{Path(item['image']).stem}.txt"
        if not box_file.is_file() or not box_file.read_text().strip():
            continue
        shape = shapes[index] if shapes is not None else _stored_shape(item["image"])
        if shape is None or any(pd.isna(v) for v in shape):
            continue
        item[BOXES_KEY] = str(box_file.resolve())
        item[BOXES_SHAPE_KEY] = [int(shape[0]), int(shape[1])]
        with_boxes += 1
    logger.info("%s: %d of %d fractured images have YOLO boxes", folder, with_boxes,
                sum(int(item["label"]) == 1 for item in items))
    return items


__all__ = ["BOXES_KEY", "BOXES_SHAPE_KEY", "BOX_KEYS", "YOLO_FOLDERS", "attach_yolo_boxes"]
