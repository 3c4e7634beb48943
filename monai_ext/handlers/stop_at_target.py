"""Stop training once every class reaches a validation target, or once validation stops improving."""

from __future__ import annotations

import logging
from typing import Any, Optional

import torch
from monai.handlers import EarlyStopHandler
from monai.utils import min_version, optional_import

Events, _ = optional_import("ignite.engine", "0.4.4", min_version, "Events")

__all__ = ["StopAtTarget"]

logger = logging.getLogger("monai_ext.training")


class StopAtTarget:
    """Attach to a trainer: after each run of ``validator``, stop training when the key metric of every class
    (the per-case, per-class values MONAI's metric handlers keep in ``state.metric_details``, averaged over
    the cases) is at least ``target``; where the metric keeps no details, its value decides. Ignite then fires
    ``COMPLETED``, so the checkpoint handlers write the weights as after a full run.

    With ``patience``, training also stops after that many validations without a better key metric (MONAI's
    ``EarlyStopHandler`` on the validator, its trainer set here: no configuration has to wire the trainer to its
    own handler).

    Args:
        validator: the evaluator whose key metric decides.
        target: the value each class must reach; ``None``: no target.
        patience: validations without improvement before stopping; ``None``: no early stopping.
    """

    def __init__(self, validator: Any, target: Optional[float] = None, patience: Optional[int] = None) -> None:
        self.validator = validator
        self.target = target
        self.patience = patience
        self.trainer = None

    def attach(self, engine) -> None:
        self.trainer = engine
        if self.target is not None:
            self.validator.add_event_handler(Events.EPOCH_COMPLETED, self._check)
        if self.patience is not None:
            EarlyStopHandler(self.patience, self._key_metric, trainer=engine, epoch_level=True).attach(self.validator)

    @staticmethod
    def _key_metric(validator) -> float:
        return float(validator.state.metrics[validator.state.key_metric_name])

    def per_class(self, validator) -> torch.Tensor:
        name = validator.state.key_metric_name
        details = getattr(validator.state, "metric_details", {}).get(name)
        if details is None:
            return torch.tensor([float(validator.state.metrics[name])])
        details = torch.as_tensor(details, dtype=torch.float32)
        return details.reshape(-1, details.shape[-1]).nanmean(0)

    def _check(self, validator) -> None:
        values = self.per_class(validator)
        if bool((values >= self.target).all()) and self.trainer.state.epoch < self.trainer.state.max_epochs:
            logger.info(
                "every class at %s >= %.2f (%s) after epoch %d: stopping",
                validator.state.key_metric_name,
                self.target,
                ", ".join(f"{v:.4f}" for v in values.tolist()),
                self.trainer.state.epoch,
            )
            self.trainer.terminate()
