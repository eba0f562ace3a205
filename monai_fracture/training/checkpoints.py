"""Checkpoint safety and the last-state checkpoint used to resume an interrupted run."""

from __future__ import annotations

import re
from os import PathLike
from pathlib import Path

from monai_fracture.model.package import ModelPackageError, UnsafeCheckpointError, safe_torch_load

__all__ = ["ModelPackageError", "UnsafeCheckpointError", "latest_checkpoint", "resume_checkpoint", "safe_torch_load"]

_EPOCH_CHECKPOINT = re.compile(r"checkpoint_epoch=(\d+)\.pt$")


def latest_checkpoint(ckpt_dir: str | PathLike) -> Path | None:
    """The ``checkpoint_epoch=N.pt`` with the largest N written by MONAI's CheckpointSaver, or None."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _EPOCH_CHECKPOINT.search(p.name))]
    return max(found)[1] if found else None


def resume_checkpoint(ckpt_dir: str | PathLike, resume: bool) -> str | None:
    """The checkpoint to resume from when ``resume`` is set; errors name the folder when there is none."""
    if not resume:
        return None
    path = latest_checkpoint(ckpt_dir)
    if path is None:
        raise ModelPackageError(ckpt_dir, "resume=true but no checkpoint_epoch=N.pt to resume from in this folder")
    return str(path)
