"""Gradient clipping between the backward pass and the optimiser step of a MONAI trainer."""

from __future__ import annotations

from typing import Optional

import torch
from monai.engines.utils import IterationEvents

__all__ = ["GradientClipping"]


class GradientClipping:
    """Attach to a MONAI ``SupervisedTrainer``: clip the gradients of ``parameters`` after each backward pass
    (``IterationEvents.BACKWARD_COMPLETED``, before the optimiser step).

    Args:
        parameters: the parameters whose gradients are clipped (e.g. ``network.parameters()``).
        max_norm: clip the global L2 norm to this (``torch.nn.utils.clip_grad_norm_``; nnU-Net uses 12).
        max_value: clamp every gradient value to ``[-max_value, max_value]``
            (``torch.nn.utils.clip_grad_value_``; PraNet's ``clip_gradient`` with 0.5).

    With neither set the handler does nothing. Under AMP the gradients are unscaled first (the grad scaler
    then skips its own unscaling and still skips steps with infinite gradients).
    """

    def __init__(self, parameters, max_norm: Optional[float] = None, max_value: Optional[float] = None) -> None:
        self.parameters = [p for p in parameters if p.requires_grad]
        self.max_norm = max_norm
        self.max_value = max_value

    def attach(self, engine) -> None:
        if self.max_norm is None and self.max_value is None:
            return
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine) -> None:
        scaler = getattr(engine, "scaler", None)
        if getattr(engine, "amp", False) and scaler is not None and scaler.is_enabled():
            scaler.unscale_(engine.optimizer)
        if self.max_value is not None:
            torch.nn.utils.clip_grad_value_(self.parameters, self.max_value)
        if self.max_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.max_norm)
