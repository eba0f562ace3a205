"""Decode + preprocess in DataLoader workers, so reading overlaps model compute and nothing piles up.

A map-style ``Dataset`` over the catalog's work items (paths, not pixels): each item is read
and preprocessed when the loader asks for it, and a failure becomes a value (reason, detail)
instead of an exception, so one bad file never stops the stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from monai_fracture.io.content import check_usable_content
from monai_fracture.io.errors import ImageReadError
from monai_fracture.scoring.catalog import WorkItem
from monai_fracture.model.classifier import InputGeometry, channel_first

logger = logging.getLogger(__name__)

PREPROCESSING_FAILED = "preprocessing_failed"


def read_item(item: WorkItem) -> tuple[np.ndarray, dict]:
    """Pixels of a work item through ``monai_fracture.io`` (an image, or a CT series as a volume)."""
    from monai_fracture.io import read_dicom_series, read_image

    if item.family == "ct" and len(item.paths) > 1:
        return read_dicom_series(list(item.paths))
    return read_image(item.paths[0])


def read_and_preprocess(item: WorkItem, preprocessing: Callable[[dict], Any]) -> dict[str, Any]:
    """One work item -> ``{"image": tensor (C, *spatial) or None, "error": (reason, detail) or None}``
    and, when read, ``"geometry"`` (``InputGeometry``: how a heatmap of the input maps back to the source).

    Never raises: a failure becomes a value, so one bad file never stops the stream.
    """
    try:
        array, meta = read_item(item)
        check_usable_content(array, item.paths[0])
    except ImageReadError as err:
        return {"image": None, "error": (err.reason.value, err.detail)}
    except MemoryError:
        return {"image": None, "error": ("undecodable", "out of memory while decoding")}
    except Exception as err:  # a reader bug must not stop the run; name it
        logger.exception("unexpected error reading %s", item.paths[0])
        return {"image": None, "error": ("undecodable", f"{type(err).__name__}: {err}")}
    try:
        data = preprocessing({"image": channel_first(array, meta)})
        image = data["image"] if isinstance(data, dict) else data
        tensor = torch.as_tensor(image).as_subclass(torch.Tensor).float().contiguous()
        if not torch.isfinite(tensor).all():
            raise ValueError("non-finite values after preprocessing")
    except Exception as err:
        return {"image": None, "error": (PREPROCESSING_FAILED, f"{type(err).__name__}: {err}")}
    return {"image": tensor, "error": None, "geometry": InputGeometry.of(image, np.shape(array))}


class WorkItemDataset(Dataset):
    """Work item ``index`` -> ``{"index", "image" (tensor or None), "error" ((reason, detail) or None)}``."""

    def __init__(self, items: Sequence[WorkItem], preprocessing: Callable[[dict], Any]) -> None:
        self.items = list(items)
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"index": index, **read_and_preprocess(self.items[index], self.preprocessing)}


def _collate(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return samples


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # decode workers must not compete with the model's threads


def make_loader(dataset: WorkItemDataset, batch_size: int, workers: int) -> DataLoader:
    """Batches of samples in catalog order; ``workers`` > 0 decodes in that many processes."""
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs.update(worker_init_fn=_worker_init, prefetch_factor=2, persistent_workers=False)
    return DataLoader(
        dataset,
        batch_size=max(1, batch_size),
        shuffle=False,
        num_workers=max(0, workers),
        collate_fn=_collate,
        **kwargs,
    )
