"""An exponential moving average of the network's weights, validated and kept in place of the raw weights."""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

import torch
from monai.utils import min_version, optional_import
from torch.optim.swa_utils import AveragedModel

Events, _ = optional_import("ignite.engine", "0.4.4", min_version, "Events")

__all__ = ["WeightAverage"]

logger = logging.getLogger("monai_ext.training")


class WeightAverage:
    """Attach to a trainer: keep an exponential moving average (EMA) of ``network``'s parameters and buffers,
    updated after every optimiser step, and let ``validator`` score the average instead of the raw weights.

    The first update copies the weights (as PyTorch's ``AveragedModel`` does); update ``n + 1`` moves the average
    by ``1 - d_n`` towards the weights, with ``d_n = min(decay, (1 + n) / (10 + n))`` (the ramp of TensorFlow's
    ``ExponentialMovingAverage`` with ``num_updates``), so that a short run is not dominated by its first steps;
    ``decay`` is reached after ``(10 decay - 1) / (1 - decay)`` steps (about 9,000 for 0.999).

    For each validation the average is copied into ``network`` and the raw weights are put back when the
    validator completes (after every other handler of the validator, the checkpoint saver's included): the
    metric, the best checkpoint (``model.pt``) and the per-class targets are those of the average, while
    training continues on the raw weights. ``state_dict()`` holds the average and the step count; list the
    handler in the checkpoint saver's ``training_state`` so that a resumed run continues it.

    Args:
        network: the trained network (its ``state_dict`` is averaged).
        validator: the evaluator that runs on ``network``.
        decay: the EMA decay; ``None`` turns the handler off (validation scores the raw weights).
    """

    def __init__(self, network: torch.nn.Module, validator: Any = None, decay: Optional[float] = None) -> None:
        if decay is not None and not 0.0 < decay < 1.0:
            raise ValueError(f"decay must lie in (0, 1), got {decay}.")
        self.network = network
        self.validator = validator
        self.decay = decay
        self.average: Optional[AveragedModel] = None
        if decay is not None:
            self.average = AveragedModel(network, multi_avg_fn=self._update, use_buffers=True)
        self._raw: Optional[Dict[str, torch.Tensor]] = None
        self._restore_attached = False

    def current_decay(self) -> float:
        """``d_n`` for the next update (``n`` updates so far)."""
        n = int(self.average.n_averaged) if self.average is not None else 0
        return min(float(self.decay or 0.0), (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def _update(self, averaged: list, current: list, num_averaged: torch.Tensor) -> None:
        d = self.current_decay()
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1.0 - d)
        for a, c in zip(averaged, current):  # integer buffers (BatchNorm's step count) follow the network
            if not a.is_floating_point():
                a.copy_(c)

    def attach(self, engine) -> None:
        if self.average is None:
            return
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._step)
        if self.validator is not None:
            self.validator.add_event_handler(Events.STARTED, self._swap_in)

    def _step(self, engine) -> None:
        self.average.update_parameters(self.network)

    def _swap_in(self, validator) -> None:
        if int(self.average.n_averaged) == 0:
            return
        if not self._restore_attached:  # attached now, so that it runs after every handler attached before the run
            validator.add_event_handler(Events.COMPLETED, self._swap_out)
            validator.add_event_handler(Events.EXCEPTION_RAISED, self._swap_out_on_error)
            self._restore_attached = True
        state = self.network.state_dict()
        self._raw = {k: v.detach().clone() for k, v in state.items()}
        self.network.load_state_dict(self.average.module.state_dict())

    def _swap_out(self, validator) -> None:
        if self._raw is not None:
            self.network.load_state_dict(self._raw)
            self._raw = None

    def _swap_out_on_error(self, validator, e: Exception) -> None:
        self._swap_out(validator)
        raise e

    def state_dict(self) -> Dict[str, Any]:
        return {} if self.average is None else self.average.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if self.average is not None and state:
            self.average.load_state_dict(state)
        elif self.average is not None:
            logger.warning("the training state holds no weight average: it restarts from the resumed weights")
            self.average = AveragedModel(self.network, multi_avg_fn=self._update, use_buffers=True)
