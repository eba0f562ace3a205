"""Box-guided training iteration for MONAI's ``SupervisedTrainer``: loss + weight x box-attention loss.

The trainer stays MONAI's, and so does its iteration: :class:`BoxGuidedIteration` is an
``iteration_update`` that runs ``SupervisedTrainer._iteration`` (forward, AMP, gradient
accumulation, events, optimiser step) with the trainer's loss function extended for that one
iteration by ``box_loss_weight`` x :class:`~monai_fracture.training.box_guidance.BoxAttentionLoss`
on the class activation map of the network's last feature map (read through a forward hook on the
global pooling the network registry names). The batch must carry the ``box_mask`` that
:mod:`monai_fracture.training.box_transforms` makes. The box and classification parts of the
loss go into the engine output (``box_loss``, ``class_loss``) for the stats handlers and the
training history.

With ``box_loss_weight`` 0 there is nothing to add: :func:`box_guided_iteration` then returns
None and the trainer keeps its own iteration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
from ignite.engine import Engine
from monai.utils import convert_to_tensor

from monai_fracture.networks.registry import head_module
from monai_fracture.training.box_guidance import BoxAttentionLoss, FeatureMapTap, class_activation_map
from monai_fracture.training.box_transforms import BOX_MASK_KEY

logger = logging.getLogger(__name__)


class BoxGuidedIteration:
    """``iteration_update`` for ``SupervisedTrainer``: its own iteration with the box-attention term added.

    Args:
        box_loss_weight: weight of the box-attention loss (> 0).
        temperature: of :class:`BoxAttentionLoss` (spatial softmax of the CAM).
        mask_key: batch key of the (B, 1, H, W) box masks.
        layer: module whose input is the last feature map; None asks the network registry.
        positive, negative: the classes whose logit difference the CAM shows.
    """

    def __init__(
        self,
        box_loss_weight: float = 0.2,
        temperature: float = 1.0,
        mask_key: str = BOX_MASK_KEY,
        layer: str | None = None,
        positive: int = 1,
        negative: int | None = 0,
    ) -> None:
        if not box_loss_weight > 0:
            raise ValueError(f"box_loss_weight must be positive, got {box_loss_weight}; with 0 use the trainer's own iteration")
        self.box_loss_weight = float(box_loss_weight)
        self.box_loss = BoxAttentionLoss(temperature=temperature)
        self.mask_key, self.layer = mask_key, layer
        self.positive, self.negative = positive, negative

    def _masks(self, batchdata: Any, device: torch.device | str) -> torch.Tensor:
        if not isinstance(batchdata, Mapping) or self.mask_key not in batchdata:
            raise KeyError(f"box-guided training needs {self.mask_key!r} in every batch: build the training "
                           "transforms with monai_fracture.training.box_transforms.with_box_masks")
        return convert_to_tensor(batchdata[self.mask_key], track_meta=False).to(device)

    def __call__(self, engine: Engine, batchdata: Any) -> Any:
        masks = self._masks(batchdata, engine.state.device)
        network = engine.network
        base_loss = engine.loss_function
        head = head_module(network)

        def guided_loss(pred: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            class_loss = base_loss(pred, targets).mean()
            cam = class_activation_map(tap.features, head, self.positive, self.negative)
            box_loss = self.box_loss(cam, masks)
            engine.state.output["class_loss"] = class_loss.detach()
            engine.state.output["box_loss"] = box_loss.detach()
            return class_loss + self.box_loss_weight * box_loss

        with FeatureMapTap(network, self.layer) as tap:
            engine.loss_function = guided_loss
            try:
                return engine._iteration(engine, batchdata)
            finally:
                engine.loss_function = base_loss


def box_guided_iteration(box_loss_weight: float = 0.0, **kwargs: Any) -> Callable[[Engine, Any], Any] | None:
    """A :class:`BoxGuidedIteration` for ``box_loss_weight`` > 0, else None (the trainer's own iteration)."""
    if not box_loss_weight:
        return None
    logger.info("box-guided training: loss + %g x box attention", box_loss_weight)
    return BoxGuidedIteration(box_loss_weight=box_loss_weight, **kwargs)


__all__ = ["BoxGuidedIteration", "box_guided_iteration"]
