"""Train for a wall-clock budget instead of a guessed number of epochs."""

from __future__ import annotations

import logging
import time
from typing import Any, List, Optional

import torch
from monai.utils import min_version, optional_import

Events, _ = optional_import("ignite.engine", "0.4.4", min_version, "Events")

__all__ = ["BudgetClock", "TimeBudget", "rank0_value"]

logger = logging.getLogger("monai_ext.time_budget")


def rank0_value(value: float) -> float:
    """``value`` as rank 0 has it, under ``torch.distributed`` (one broadcast); else ``value``: rank 0's clock
    decides for every rank, so that all stop, and set their learning rate, alike."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        tensor = torch.tensor(
            [value], dtype=torch.float64, device="cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
        )
        torch.distributed.broadcast(tensor, src=0)
        return float(tensor.item())
    return value


class BudgetClock:
    """The wall clock of a run with a time budget of ``minutes``: the time since the trainer started and the
    duration of each of its epochs, which :class:`TimeBudget` stops by and ``LrSchedule`` anneals by.

    ``seconds`` is ``None`` when ``minutes`` is ``None`` or <= 0 (no budget); its users then leave it unattached.
    They attach their own handlers after :meth:`attach`, so that an epoch's duration is recorded before they read
    :attr:`mean_epoch_seconds`.
    """

    def __init__(self, minutes: Optional[float]) -> None:
        self.seconds = None if minutes is None or minutes <= 0 else float(minutes) * 60.0
        self.start = 0.0
        self.epoch_seconds: List[float] = []
        self._epoch_start = 0.0

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_ended)

    @property
    def elapsed(self) -> float:
        """Seconds since the trainer started."""
        return time.perf_counter() - self.start

    @property
    def mean_epoch_seconds(self) -> float:
        """The mean duration of the epochs completed so far (0 before the first)."""
        return sum(self.epoch_seconds) / len(self.epoch_seconds) if self.epoch_seconds else 0.0

    def _started(self, engine) -> None:
        self.start = time.perf_counter()
        self.epoch_seconds = []

    def _epoch_started(self, engine) -> None:
        self._epoch_start = time.perf_counter()

    def _epoch_ended(self, engine) -> None:
        self.epoch_seconds.append(time.perf_counter() - self._epoch_start)


class TimeBudget(BudgetClock):
    """Stop a trainer cleanly when ``minutes`` of wall-clock time are spent.

    After each epoch (and its validation: attach this after the ``ValidationHandler``) training stops when
    the next epoch, at the mean epoch time so far, would end past the budget; within an epoch it stops
    after the iteration that reaches the budget, and then, when a ``validator`` is given, validates the
    final weights once so that the best checkpoint can still take them. Ignite then fires ``COMPLETED``,
    so checkpoint handlers write the last weights as after a full run. ``max_epochs`` stays an upper bound.

    Under ``torch.distributed`` rank 0's clock decides for every rank (one broadcast per iteration).

    Args:
        minutes: the budget; ``None`` or a value <= 0 turns the budget off.
        validator: an evaluator to run on the final weights after a stop within an epoch.
    """

    def __init__(self, minutes: Optional[float], validator: Optional[Any] = None) -> None:
        super().__init__(minutes)
        self.validator = validator

    def attach(self, engine) -> None:
        if self.seconds is None:
            return
        super().attach(engine)
        engine.add_event_handler(Events.STARTED, self._announce)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)

    def _announce(self, engine) -> None:
        logger.info("time budget: %.1f min", self.seconds / 60)

    def _agreed(self, stop: bool) -> bool:
        return bool(rank0_value(1.0 if stop else 0.0))

    def _iteration(self, engine) -> None:
        elapsed = self.elapsed
        if not self._agreed(elapsed >= self.seconds):
            return
        logger.info(
            "time budget of %.1f min spent during epoch %d (%.1f min): stopping",
            self.seconds / 60,
            engine.state.epoch,
            elapsed / 60,
        )
        engine.terminate()
        if self.validator is not None:
            self.validator.run(engine.state.epoch)

    def _epoch(self, engine) -> None:
        elapsed, mean = self.elapsed, self.mean_epoch_seconds
        if self._agreed(elapsed + mean > self.seconds) and engine.state.epoch < engine.state.max_epochs:
            logger.info(
                "time budget: epoch %d ended at %.1f of %.1f min and the next would take %.1f: stopping",
                engine.state.epoch,
                elapsed / 60,
                self.seconds / 60,
                mean / 60,
            )
            engine.terminate()
