"""Tiny FracAtlas-layout datasets with YOLO boxes, for box-guided training tests.

``labels.csv`` (path,label,group,width,height), ``images/*.png`` and ``annotations/yolo/<stem>.txt``:
fractured images carry a bright square at their box; normal images get an empty box file, as in
FracAtlas.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_box_dataset(root: Path, n: int = 24, seed: int = 0, box: float = 0.25) -> Path:
    """Write ``n`` images (half fractured, alternating portrait/landscape) with boxes under ``root``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "yolo").mkdir(parents=True, exist_ok=True)
    rows = ["path,label,group,width,height"]
    for i in range(n):
        height, width = (120, 90) if i % 2 else (90, 120)
        image = (rng.random((height, width)) * 60 + 40).astype(np.uint8)
        label = int(i % 4 in (1, 2))
        stem = f"IMG{i:04d}"
        text = ""
        if label:
            cx, cy = rng.uniform(0.25, 0.75, size=2)
            r0, r1 = int((cy - box / 2) * height), int((cy + box / 2) * height)
            c0, c1 = int((cx - box / 2) * width), int((cx + box / 2) * width)
            image[r0:r1, c0:c1] = 250
            text = f"0 {(c0 + c1) / 2 / width:.5f} {(r0 + r1) / 2 / height:.5f} {(c1 - c0) / width:.5f} {(r1 - r0) / height:.5f}\n"
        (root / "annotations" / "yolo" / f"{stem}.txt").write_text(text)
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        rows.append(f"images/{stem}.png,{label},g{i},{width},{height}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def exif_rotated_jpeg(path: Path, height: int = 60, width: int = 100) -> Path:
    """A JPEG stored ``height`` x ``width`` with EXIF orientation 6: readers that honour EXIF return it transposed."""
    image = Image.fromarray(np.full((height, width), 128, dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, exif=exif.tobytes())
    return path
