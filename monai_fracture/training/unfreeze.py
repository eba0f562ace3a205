"""Ignite handler for head-only warm-up: backbone frozen for the first epochs, then trained."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ignite.engine import Engine, Events
from torch import nn

from monai_fracture.networks.transfer import set_backbone_trainable

logger = logging.getLogger(__name__)


class UnfreezeBackbone:
    """Train only the head for ``warmup_epochs`` epochs, then the whole network.

    Attach to a trainer (in a bundle: an entry of ``train#handlers``). The state is set at
    every epoch start from ``engine.state.epoch``, so resumed runs get it right too.
    ``network`` defaults to ``engine.network`` (MONAI's ``SupervisedTrainer`` has one).
    Build the optimizer from all parameters (e.g. :func:`monai_fracture.networks.parameter_groups`)
    so the unfrozen backbone is optimised without rebuilding it.
    """

    def __init__(self, warmup_epochs: int = 1, network: nn.Module | None = None,
                 head_prefixes: Sequence[str] | None = None) -> None:
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        self.warmup_epochs = int(warmup_epochs)
        self.network = network
        self.head_prefixes = None if head_prefixes is None else tuple(head_prefixes)  # None: the family's head

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        network = self.network if self.network is not None else getattr(engine, "network", None)
        if network is None:
            raise ValueError("UnfreezeBackbone needs a network: pass network= or attach to an engine with .network")
        trainable = engine.state.epoch > self.warmup_epochs
        set_backbone_trainable(network, trainable, self.head_prefixes)
        logger.info("epoch %d: backbone %s", engine.state.epoch, "trainable" if trainable else "frozen (head only)")


__all__ = ["UnfreezeBackbone"]
