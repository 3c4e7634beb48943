"""Learning-rate schedules stepped when their kind needs it: per epoch, per validation for a plateau, or over a
time budget."""

from __future__ import annotations

import logging
from typing import Any, Optional

import torch
from monai.handlers import LrScheduleHandler
from monai.utils import min_version, optional_import

from monai_ext.handlers.time_budget import BudgetClock, rank0_value

Events, _ = optional_import("ignite.engine", "0.4.4", min_version, "Events")

__all__ = ["LrSchedule"]

logger = logging.getLogger("monai_ext.training")


class LrSchedule:
    """Attach to a trainer: step ``lr_scheduler`` at the end of every epoch (MONAI's ``LrScheduleHandler``), or,
    for ``ReduceLROnPlateau``, once after every run of ``validator`` with its key metric.

    A plateau schedule stepped every epoch with the last validation's value would count the epochs between
    two validations as epochs without improvement: with ``val_interval`` 5 its patience would run out 5
    times too early (and in the learning-curve benchmark, which validates every 25 steps, the rate fell to
    its minimum within the first validations). Its ``mode`` must match the key metric (``"max"`` for Dice).

    **Over a time budget** (``minutes``), a schedule whose length is the trainer's ``max_epochs`` (cosine,
    polynomial, step decay: any PyTorch schedule with a closed form) runs on whichever is further along, the
    epochs or the clock: before every iteration the schedule is set to ``max_epochs * elapsed / horizon``
    epochs when that is more than the epochs done (iterations counted), where the horizon is the budget less
    one mean epoch (the
    :class:`~monai_ext.handlers.TimeBudget` stops before an epoch that would overrun). A run cut short by the
    budget so ends at the schedule's final rate, as a full run does, instead of stopping at its start; a run
    that fits in its budget never sees the clock and is the same run as without a budget. Under
    ``torch.distributed`` rank 0's clock sets every rank's rate.

    Args:
        lr_scheduler: any PyTorch learning-rate scheduler.
        validator: the evaluator whose key metric a plateau schedule watches.
        print_lr: log the learning rate after each step.
        minutes: the training time budget (``None`` or <= 0: none).
    """

    def __init__(
        self, lr_scheduler: Any, validator: Any = None, print_lr: bool = False, minutes: Optional[float] = None
    ) -> None:
        self.lr_scheduler = lr_scheduler
        self.validator = validator
        self.print_lr = print_lr
        self.clock = BudgetClock(minutes)

    @property
    def plateau(self) -> bool:
        return isinstance(self.lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)

    @property
    def anneals_over_budget(self) -> bool:
        return self.clock.seconds is not None and hasattr(self.lr_scheduler, "_get_closed_form_lr")

    def attach(self, engine) -> None:
        if self.plateau:
            if self.validator is None:
                raise ValueError("a ReduceLROnPlateau schedule needs the validator whose metric it watches.")
            self.validator.add_event_handler(Events.COMPLETED, self._validated)
            return
        if not self.anneals_over_budget:
            LrScheduleHandler(self.lr_scheduler, print_lr=self.print_lr, epoch_level=True).attach(engine)
            return
        self.clock.attach(engine)
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_STARTED, self._anneal)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _started(self, engine) -> None:
        logger.info(
            "learning-rate schedule: over %d epochs or %.1f min, whichever is further along",
            engine.state.max_epochs,
            self.clock.seconds / 60,
        )

    def _set(self, epochs: float) -> None:
        self.lr_scheduler.last_epoch = epochs
        for group, lr in zip(self.lr_scheduler.optimizer.param_groups, self.lr_scheduler._get_closed_form_lr()):
            group["lr"] = lr
        self.lr_scheduler._last_lr = [g["lr"] for g in self.lr_scheduler.optimizer.param_groups]

    def _anneal(self, engine) -> None:
        done = engine.state.epoch - 1  # completed epochs: where an epoch-stepped schedule stands during this one
        seconds = self.clock.seconds
        horizon = max(seconds - self.clock.mean_epoch_seconds, seconds / 2)
        by_clock = min(1.0, self.clock.elapsed / horizon) * engine.state.max_epochs
        by_clock = rank0_value(by_clock)
        length = engine.state.epoch_length
        # where the count will stand at the end of this iteration: a run that keeps pace with its budget never
        # sees the clock, not even at its first iteration (its rate would then depend on how long loading took)
        by_count = done + ((engine.state.iteration - 1) % length + 1) / length if length else float(done + 1)
        self._set(by_clock if by_clock > by_count else float(done))

    def _epoch_completed(self, engine) -> None:
        self._set(
            float(engine.state.epoch)
        )  # as an epoch-stepped schedule stands after its step (saved with the state)
        if self.print_lr:
            logger.info(
                "learning rate after epoch %d: %s",
                engine.state.epoch,
                ", ".join(f"{g['lr']:.3g}" for g in self.lr_scheduler.optimizer.param_groups),
            )

    def _validated(self, validator) -> None:
        value = float(validator.state.metrics[validator.state.key_metric_name])
        self.lr_scheduler.step(value)
        if self.print_lr:
            logger.info(
                "learning rate after validation (%s %.4f): %s",
                validator.state.key_metric_name,
                value,
                ", ".join(f"{g['lr']:.3g}" for g in self.lr_scheduler.optimizer.param_groups),
            )
