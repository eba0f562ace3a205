"""MONAI transforms that turn a datalist item's fracture boxes into a mask aligned with the network input.

A box-guided training chain is the usual preprocessing with one step added before the
augmentation: :class:`YoloBoxMaskd` reads the item's YOLO file (``boxes``) and draws the boxes
into a ``box_mask`` of the preprocessed image's size, in the geometry of the aspect-preserving
resize and pad that image went through. The augmentation then moves the mask with the image
(``build_augmentation(mask_keys=["box_mask"])``: same rotation, scale and flip, nearest
sampling, no intensity changes), so the mask stays on the fracture.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import Compose, EnsureTyped, MapTransform, Transform
from monai.utils import MetaKeys

from monai_fracture.data.boxes import BOXES_KEY, BOXES_SHAPE_KEY
from monai_fracture.training.box_guidance import box_mask, read_yolo_boxes

logger = logging.getLogger(__name__)

BOX_MASK_KEY = "box_mask"


class YoloBoxMask(Transform):
    """Normalised YOLO boxes (K, 4) of an image read at ``read_shape`` -> a (1, size, size) uint8 mask.

    The geometry is that of :class:`~monai_fracture.transforms.spatial.ResizeWithPadToSquare`
    (longest side to ``size``, then centred zero padding), i.e. of the preprocessed image.
    uint8 because a ``CacheDataset`` keeps it with the image (a quarter of float32's memory);
    :func:`with_box_masks` makes it float32 after the augmentation.
    """

    def __init__(self, pad_method: str = "symmetric") -> None:
        self.pad_method = pad_method

    def __call__(self, boxes: np.ndarray, read_shape: Sequence[int], size: int) -> torch.Tensor:
        mask = box_mask(np.asarray(boxes, dtype=np.float32).reshape(-1, 4), read_shape, int(size), self.pad_method)
        return torch.from_numpy(mask)[None]


class YoloBoxMaskd(MapTransform):
    """Dictionary wrapper of :class:`YoloBoxMask`: ``keys`` (the YOLO file path) -> ``mask_key``.

    Place it after the preprocessing's resize and pad (before augmentation). The image must be
    the MetaTensor the loader made: its ``spatial_shape`` metadata is the shape as read, which
    the boxes must fit. Every item gets a mask (zeros when it has no boxes), so batches collate;
    the datalist keys (``keys`` and ``shape_key``) are removed.

    No boxes are drawn when the key is missing or empty, when the label is not ``positive``
    (the loss pulls the fracture evidence into boxes; a normal image has none), or when
    ``shape_key`` gives an annotated ``[rows, cols]`` that differs from the shape as read (an
    EXIF-rotated photo is read transposed relative to the pixels its boxes were drawn on).
    """

    def __init__(
        self,
        keys: KeysCollection = BOXES_KEY,
        image_key: str = "image",
        mask_key: str = BOX_MASK_KEY,
        shape_key: str | None = BOXES_SHAPE_KEY,
        label_key: str | None = "label",
        positive: int = 1,
        pad_method: str = "symmetric",
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        if len(self.keys) != 1:
            raise ValueError(f"YoloBoxMaskd draws one mask from one box key, got keys {self.keys}")
        self.image_key, self.mask_key, self.shape_key = image_key, mask_key, shape_key
        self.label_key, self.positive = label_key, positive
        self.to_mask = YoloBoxMask(pad_method)

    def _read_shape(self, image: Any) -> tuple[int, int]:
        meta = getattr(image, "meta", None) or {}
        shape = meta.get(MetaKeys.SPATIAL_SHAPE)
        if shape is None:
            raise ValueError(f"YoloBoxMaskd: {self.image_key!r} has no {MetaKeys.SPATIAL_SHAPE!r} metadata; "
                             "place it after the loader, on the MetaTensor it returns")
        shape = tuple(int(n) for n in np.asarray(shape).reshape(-1))
        if len(shape) != 2:
            raise ValueError(f"YoloBoxMaskd: boxes need a 2D image, {meta.get('filename_or_obj')} was read as {shape}")
        return shape

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        key = self.keys[0]
        image = d[self.image_key]
        size = int(image.shape[-1])
        if tuple(image.shape[-2:]) != (size, size):
            raise ValueError(f"YoloBoxMaskd: expects the square preprocessed image, got spatial shape {tuple(image.shape[1:])}")
        path = d.pop(key, None)
        annotated = d.pop(self.shape_key, None) if self.shape_key else None
        boxes = np.zeros((0, 4), dtype=np.float32)
        positive = self.label_key is None or int(np.asarray(d.get(self.label_key, -1)).reshape(-1)[0]) == self.positive
        if path and positive:
            read_shape = self._read_shape(image)
            if annotated is not None and tuple(int(n) for n in annotated) != read_shape:
                logger.debug("%s: boxes drawn on %s but the image reads as %s; not used", path, list(annotated), read_shape)
            else:
                boxes = read_yolo_boxes(path)
        d[self.mask_key] = self.to_mask(boxes, self._read_shape(image) if len(boxes) else (size, size), size)
        return d


def with_box_masks(
    augmentation: Callable | None,
    enabled: bool = True,
    image_key: str = "image",
    mask_key: str = BOX_MASK_KEY,
) -> Callable | None:
    """``augmentation`` preceded by :class:`YoloBoxMaskd` and followed by a plain-tensor mask; unchanged if not ``enabled``.

    Pass the result as ``build_preprocessing(augmentation=...)``, with ``augmentation`` built by
    ``build_augmentation(mask_keys=[mask_key])`` so the mask moves with the image.
    """
    if not enabled:
        return augmentation
    steps: list[Callable] = [YoloBoxMaskd(image_key=image_key, mask_key=mask_key)]
    if augmentation is not None:
        steps.append(augmentation)
    steps.append(EnsureTyped(keys=mask_key, dtype=torch.float32, track_meta=False))
    return Compose(steps)


__all__ = ["BOX_MASK_KEY", "YoloBoxMask", "YoloBoxMaskd", "with_box_masks"]
