"""Learning-rate schedules stepped when their kind needs it: per epoch, or per validation for a plateau."""

from __future__ import annotations

import logging
from typing import Any, Optional

import torch
from monai.handlers import LrScheduleHandler
from monai.utils import min_version, optional_import

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

    Args:
        lr_scheduler: any PyTorch learning-rate scheduler.
        validator: the evaluator whose key metric a plateau schedule watches.
        print_lr: log the learning rate after each step.
    """

    def __init__(self, lr_scheduler: Any, validator: Any = None, print_lr: bool = False) -> None:
        self.lr_scheduler = lr_scheduler
        self.validator = validator
        self.print_lr = print_lr

    @property
    def plateau(self) -> bool:
        return isinstance(self.lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)

    def attach(self, engine) -> None:
        if not self.plateau:
            LrScheduleHandler(self.lr_scheduler, print_lr=self.print_lr, epoch_level=True).attach(engine)
            return
        if self.validator is None:
            raise ValueError("a ReduceLROnPlateau schedule needs the validator whose metric it watches.")
        self.validator.add_event_handler(Events.COMPLETED, self._validated)

    def _validated(self, validator) -> None:
        value = float(validator.state.metrics[validator.state.key_metric_name])
        self.lr_scheduler.step(value)
        if self.print_lr:
            logger.info("learning rate after validation (%s %.4f): %s", validator.state.key_metric_name, value,
                        ", ".join(f"{g['lr']:.3g}" for g in self.lr_scheduler.optimizer.param_groups))
