"""``TrainingProgress``: how far training is and when it will end, as a log line every few seconds.

MONAI's ``StatsHandler`` logs each iteration's loss but not how many remain; on CPU an epoch can
take minutes, so a person watching ``make demo`` or a cluster log wants the count, the rate and
an ETA over the whole run (all epochs). Lines go through ``monai_fracture.progress.ProgressLog``.
"""

from __future__ import annotations

import ignite.distributed as idist
from ignite.engine import Engine, Events

from monai_fracture.progress import ProgressLog


class TrainingProgress:
    """Attach to the trainer; logs ``training: i/N iterations (p%), r iterations/s, ETA ...`` (rank 0)."""

    def __init__(self, interval_s: float | None = None) -> None:
        self.interval_s = interval_s
        self._log: ProgressLog | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._step)
        engine.add_event_handler(Events.COMPLETED, self._finish)

    def _start(self, engine: Engine) -> None:
        if idist.get_rank() != 0:
            return
        length = engine.state.epoch_length
        total = None if length is None else (engine.state.max_epochs - engine.state.epoch) * length
        self._log = ProgressLog(total, "training", unit="iterations", interval_s=self.interval_s)

    def _step(self, engine: Engine) -> None:
        if self._log is not None:
            self._log.update(1)

    def _finish(self, engine: Engine) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
