"""Learning-rate schedules stepped per iteration, for the bundle's ``LrScheduleHandler(epoch_level=False)``.

:func:`warmup_cosine` is the schedule of the FracAtlas cross-validation recipe
(``benchmarks/fracatlas_cv.py``): a linear warm-up over the first steps, multiplied by one
cosine decay from the base rate to zero over the whole run, with no restarts. Each parameter
group keeps its own base rate (head and backbone), so the ratio between them holds throughout.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class WarmupCosine:
    """``step -> factor``: ``min(1, (step + 1) / warmup_steps) * (1 + cos(pi * min(1, step / total_steps))) / 2``.

    A class rather than a closure so ``LambdaLR.state_dict`` (and with it the bundle's checkpoints)
    records its settings.
    """

    def __init__(self, total_steps: int, warmup_steps: int = 0) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be at least 1, got {total_steps}")
        self.total_steps = int(total_steps)
        self.warmup_steps = max(1, int(warmup_steps))

    def __call__(self, step: int) -> float:
        warmup = min(1.0, (step + 1) / self.warmup_steps)
        return warmup * 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / self.total_steps)))


def warmup_cosine(optimizer: Optimizer, max_epochs: int, steps_per_epoch: int, warmup_epochs: float = 0.0) -> LambdaLR:
    """A per-iteration ``LambdaLR`` of :class:`WarmupCosine` over ``max_epochs`` x ``steps_per_epoch`` steps.

    ``warmup_epochs`` may be fractional (0.5: half an epoch of linear warm-up).
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be at least 1, got {steps_per_epoch} (is the training set smaller than a batch?)")
    total = int(max_epochs) * int(steps_per_epoch)
    return LambdaLR(optimizer, WarmupCosine(total, int(warmup_epochs * steps_per_epoch)))


__all__ = ["WarmupCosine", "warmup_cosine"]
