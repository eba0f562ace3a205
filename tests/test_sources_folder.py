"""The one folder walk: hidden entries, exclusions, symlinked folders, and its users agree with it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from monai_fracture.sources.folder import walk_files


def _tree(root: Path) -> None:
    for rel in ("a/1.dcm", "a/b/2.dcm", "a/.hidden", ".cache/3.dcm", "out/4.dcm", "top.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")


def test_walk_lists_files_sorted_absolute_without_hidden_or_excluded(tmp_path: Path) -> None:
    _tree(tmp_path)
    found = walk_files(tmp_path, exclude=[tmp_path / "out"])
    assert found == sorted(str(tmp_path / p) for p in ("a/1.dcm", "a/b/2.dcm", "top.png"))
    # a hidden file named explicitly is an input; a missing one is listed for the caller to report
    assert walk_files([tmp_path / "a/.hidden", tmp_path / "gone.dcm"]) == sorted(
        [str(tmp_path / "a/.hidden"), str(tmp_path / "gone.dcm")])


def test_symlinked_folders_are_not_followed(tmp_path: Path) -> None:
    _tree(tmp_path / "data")
    os.symlink(tmp_path / "data" / "a", tmp_path / "data" / "link")
    assert not any("/link/" in p for p in walk_files(tmp_path / "data"))


def test_datalist_folder_layout_takes_what_io_reads(tmp_path: Path) -> None:
    """The datalist builder lists the files io accepts: no .tif/.bmp (io refuses them), no hidden folders."""
    from monai_fracture.data import folder_items

    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8)
    for cls in ("fractured", "normal"):
        (tmp_path / cls / ".thumbs").mkdir(parents=True)
        Image.fromarray(pixels).save(tmp_path / cls / "a.png")
        Image.fromarray(pixels).save(tmp_path / cls / "b.tif")
        Image.fromarray(pixels).save(tmp_path / cls / ".thumbs" / "c.png")
    items = folder_items(tmp_path)
    assert sorted(Path(i["image"]).relative_to(tmp_path).as_posix() for i in items) == ["fractured/a.png", "normal/a.png"]
