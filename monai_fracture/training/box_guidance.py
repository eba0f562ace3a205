"""Box-guided training: an auxiliary loss that pulls the fracture class activation map into the boxes.

FracAtlas (and many hospital datasets) mark fractures with boxes. A classifier trained on image
labels alone may settle on shortcuts (implants, collimation, markers); with boxes we can ask
that the evidence for "fractured" lie where the fracture is. The network stays a plain
classifier: the loss only reads the last feature map during training.

The class activation map (CAM, Zhou et al. 2016) of an EfficientNet is the head's fracture-vs-
normal weight vector applied to every position of the feature map that global pooling
averages. :class:`BoxAttentionLoss` turns it into a spatial distribution (softmax over
positions) and penalises ``-log`` of the mass that falls inside the boxes, for fractured images
that have boxes. It is scale-free (no target values for the CAM itself) and leaves images
without boxes alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import SpatialPad
from torch import nn

from monai_fracture.networks.registry import pooling_layer
from monai_fracture.transforms.spatial import square_fit_shape


class BoxFileError(ValueError):
    """A YOLO box file that cannot be used; the message names the file and the reason."""


def read_yolo_boxes(path: str | PathLike) -> np.ndarray:
    """Boxes of a YOLO label file as an (K, 4) float array of normalised ``cx, cy, w, h``.

    A missing or empty file means no box. Lines are ``class cx cy w h``; every class counts
    (FracAtlas has one, "fractured"). Values are clipped to the image.
    """
    path = Path(path)
    if not path.is_file():
        return np.zeros((0, 4), dtype=np.float32)
    boxes = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 5:
            raise BoxFileError(f"{path}: line {number} has {len(fields)} fields, a YOLO box needs 5")
        try:
            values = [float(v) for v in fields[1:5]]
        except ValueError as err:
            raise BoxFileError(f"{path}: line {number} is not numeric ({err})") from err
        boxes.append(values)
    if not boxes:
        return np.zeros((0, 4), dtype=np.float32)
    return np.clip(np.asarray(boxes, dtype=np.float32), 0.0, 1.0)


def box_mask(boxes: np.ndarray, image_shape: Sequence[int], size: int, pad_method: str = "symmetric") -> np.ndarray:
    """A (size, size) uint8 mask (1 inside any box) in the geometry of :class:`ResizeWithPadToSquare`.

    ``image_shape`` is the (rows, cols) of the image as read; the image is resized so its
    longest side is ``size`` and padded with MONAI's ``SpatialPad`` exactly as the preprocessing
    does, so the mask lines up with the cached network input.
    """
    rows, cols = square_fit_shape(tuple(int(n) for n in image_shape), size)
    mask = np.zeros((1, rows, cols), dtype=np.uint8)
    for cx, cy, w, h in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        r0, r1 = int(np.floor((cy - h / 2) * rows)), int(np.ceil((cy + h / 2) * rows))
        c0, c1 = int(np.floor((cx - w / 2) * cols)), int(np.ceil((cx + w / 2) * cols))
        mask[0, max(0, r0):max(r0 + 1, r1), max(0, c0):max(c0 + 1, c1)] = 1
    padded = SpatialPad(spatial_size=[size, size], method=pad_method, mode="constant", value=0)(mask)
    return np.asarray(padded[0], dtype=np.uint8)


class FeatureMapTap:
    """Keeps the input of a module (by default the network's global pooling, as the registry names it) each forward.

    Use as a context manager so the hook is removed afterwards; ``features`` holds the last
    (B, C, h, w) map, with its autograd graph, for :func:`class_activation_map`. ``module_name``
    None asks :func:`monai_fracture.networks.registry.pooling_layer`; a DistributedDataParallel
    wrapper is looked through.
    """

    def __init__(self, network: nn.Module, module_name: str | None = None) -> None:
        inner = getattr(network, "module", network)
        if module_name is None:
            module_name = pooling_layer(inner)
        module = dict(inner.named_modules()).get(module_name)
        if module is None:
            raise ValueError(f"{type(inner).__name__} has no module {module_name!r} to read the feature map from")
        self.module = module
        self.features: torch.Tensor | None = None
        self._handle = None

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self.features = inputs[0]

    def __enter__(self) -> FeatureMapTap:
        self._handle = self.module.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
        self._handle = None


def class_activation_map(features: torch.Tensor, head: nn.Linear, positive: int = 1, negative: int | None = 0) -> torch.Tensor:
    """(B, h, w) CAM of ``positive`` minus ``negative`` (the logit difference a softmax head decides on).

    Global average pooling then a linear head equals the mean of this map plus the bias, so the
    map shows where the decision comes from.
    """
    weight = head.weight[positive]
    if negative is not None:
        weight = weight - head.weight[negative]
    return torch.einsum("bchw,c->bhw", features.float(), weight.float())


class BoxAttentionLoss(nn.Module):
    """``-log`` of the CAM's softmax mass inside the boxes, averaged over images that have boxes.

    Args:
        temperature: divides the CAM before the spatial softmax; larger values spread attention
            and soften the penalty.
        eps: floor of the inside mass, so one image cannot give an infinite loss.
    """

    def __init__(self, temperature: float = 1.0, eps: float = 1e-4) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        self.eps = float(eps)

    def forward(self, cam: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """``cam`` (B, h, w); ``masks`` (B, H, W) or (B, 1, H, W) with 1 inside boxes at input resolution."""
        if masks.ndim == 3:
            masks = masks[:, None]
        inside = F.adaptive_max_pool2d(masks.float(), cam.shape[-2:])[:, 0].flatten(1) > 0
        has_box = inside.any(dim=1)
        if not bool(has_box.any()):
            return cam.sum() * 0.0  # keeps the graph, adds nothing
        attention = torch.softmax(cam.flatten(1) / self.temperature, dim=1)
        mass = (attention * inside).sum(dim=1)[has_box]
        return -torch.log(mass.clamp_min(self.eps)).mean()


__all__ = [
    "BoxAttentionLoss",
    "BoxFileError",
    "FeatureMapTap",
    "box_mask",
    "class_activation_map",
    "read_yolo_boxes",
]
