"""TensorBoard beyond loss and metrics: the learning rate of each parameter group, and Grad-CAM images.

Both are MONAI ``TensorBoardHandler``s (they take a ``summary_writer`` or a ``log_dir``) and write
on rank 0 only, so a bundle lists them under ``handlers`` like MONAI's own:

- ``LearningRateHandler`` (trainer): ``lr/<group name>`` at the start of each epoch, the rate that
  epoch trains with (warm-up, fine-tuning and restarts of the schedule become visible);
- ``GradCAMImageHandler`` (validator): the first ``n_images`` validation images of the first batch
  with their Grad-CAM of the fracture class overlaid, once per validation, tagged with the label
  and P(fracture), so one can watch where the network looks as training goes on.
"""

from __future__ import annotations

import logging
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers.tensorboard_handlers import TensorBoardHandler

from monai_fracture.reports.keyimage import overlay_rgb
from monai_fracture.model.gradcam import grad_cam, scale_to_unit
from monai_fracture.networks.registry import gradcam_layer

logger = logging.getLogger(__name__)




class LearningRateHandler(TensorBoardHandler):
    """Write each optimizer parameter group's learning rate as ``{tag}/{group name or index}``."""

    def __init__(self, optimizer: torch.optim.Optimizer, summary_writer: Any = None, log_dir: str = "./runs",
                 tag: str = "lr") -> None:
        super().__init__(summary_writer=summary_writer, log_dir=log_dir)
        self.optimizer = optimizer
        self.tag = tag

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if idist.get_rank() != 0:
            return
        for index, group in enumerate(self.optimizer.param_groups):
            self._writer.add_scalar(f"{self.tag}/{group.get('name', index)}", float(group["lr"]), engine.state.epoch)
        self._writer.flush()


def _label(value: Any) -> int | None:
    """The class of one item's label (an index, or one-hot after the validator's postprocessing)."""
    if value is None:
        return None
    flat = torch.as_tensor(value).reshape(-1)
    return int(flat.argmax()) if flat.numel() > 1 else int(flat[0])


def _display(image: torch.Tensor) -> np.ndarray:
    """A normalised network input (C, H, W) as a [0, 1] grey image (channel mean, min-max)."""
    grey = image.detach().float().mean(dim=0).cpu().numpy()
    low, high = float(grey.min()), float(grey.max())
    return (grey - low) / (high - low) if high > low else np.zeros_like(grey)


class GradCAMImageHandler(TensorBoardHandler):
    """Grad-CAM overlays of a few validation images, written when each validation run completes.

    The images are the first ``n_images`` of the validator's first batch (the validation loader
    does not shuffle, so they are the same images every epoch). The step is the validator's epoch,
    which MONAI's ``ValidationHandler`` sets to the trainer's. 2D networks only.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        summary_writer: Any = None,
        log_dir: str = "./runs",
        n_images: int = 4,
        class_index: int = 1,
        target_layer: str | None = None,
        image_key: str = "image",
        label_key: str = "label",
        tag: str = "validation_gradcam",
    ) -> None:
        super().__init__(summary_writer=summary_writer, log_dir=log_dir)
        self.network = network
        self.n_images = n_images
        self.class_index = class_index
        self.target_layer = target_layer
        self.image_key, self.label_key = image_key, label_key
        self.tag = tag
        self._images: torch.Tensor | None = None
        self._labels: list[int | None] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._keep_first_batch)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _reset(self, engine: Engine) -> None:
        self._images, self._labels = None, []

    def _keep_first_batch(self, engine: Engine) -> None:
        if self._images is not None or idist.get_rank() != 0:
            return
        batch = engine.state.batch
        if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], dict):
            items = batch[: self.n_images]  # MONAI engines decollate the batch before handlers run
        elif isinstance(batch, dict):
            count = min(self.n_images, len(batch[self.image_key]))
            items = [{k: v[i] for k, v in batch.items() if isinstance(v, torch.Tensor)} for i in range(count)]
        else:
            return
        images = torch.stack([torch.as_tensor(item[self.image_key]).as_subclass(torch.Tensor) for item in items])
        if images.ndim != 4:
            return  # 3D volumes: no 2D overlay
        self._labels = [_label(item.get(self.label_key)) for item in items]
        images = images.detach().clone()
        self._images = images

    def __call__(self, engine: Engine) -> None:
        if self._images is None or idist.get_rank() != 0:
            return
        # the module inside DistributedDataParallel: its forward would start collectives on rank 0 alone
        network = getattr(self.network, "module", self.network)
        was_training = network.training
        parameters = list(network.parameters())
        requires = [p.requires_grad for p in parameters]
        device = parameters[0].device
        layer = self.target_layer or gradcam_layer(network)
        try:
            network.eval()
            for parameter in parameters:  # gradients reach the activations through the input only:
                parameter.requires_grad_(False)  # no .grad written, no DDP reducer hook fired
            with torch.enable_grad():
                inputs = self._images.to(device).float().clone().requires_grad_(True)
                logits = network(inputs).detach()
            # raw maps (MONAI's default normaliser inverts them), scaled one image at a time
            maps = [grad_cam(network, inputs[i : i + 1], layer, self.class_index) for i in range(len(inputs))]
        finally:
            for parameter, flag in zip(parameters, requires):
                parameter.requires_grad_(flag)
            network.train(was_training)
        probabilities = torch.softmax(logits.float(), dim=1)[:, self.class_index].cpu().numpy()
        for index, image in enumerate(self._images):
            rgb = overlay_rgb(_display(image), scale_to_unit(maps[index][0].cpu().numpy()))
            label = self._labels[index]
            tag = f"{self.tag}/{index}_label{'?' if label is None else label}"
            self._writer.add_image(tag, rgb, engine.state.epoch, dataformats="HWC")
            self._writer.add_scalar(f"{self.tag}_probability/{index}", float(probabilities[index]), engine.state.epoch)
        self._writer.flush()
