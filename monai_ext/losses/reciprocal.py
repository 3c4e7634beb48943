"""Hi-gMISnet's reciprocal loss: cooperative learning between the parallel generators."""

from __future__ import annotations

import itertools

import torch
from torch import nn

__all__ = ["ReciprocalLoss"]


class ReciprocalLoss(nn.Module):
    """Mean absolute difference between the generators' probability maps, over every pair.

    ``L_rec = mean_{i<j} mean |act(z_i) - act(z_j)|``: zero when the generators agree, symmetric, and with
    gradients to every generator (no stop-gradient), so that each pulls the other towards it. The paper
    names the loss but does not print its formula; this is the form its description implies (see the
    bundle's docs/README.md).

    Args:
        activation: ``"softmax"`` over the channels or ``"sigmoid"`` per channel.

    ``forward(logits)``: the generators' logits stacked ``(B, G, C, ...)`` (or a list), ``G >= 2``.
    """

    def __init__(self, activation: str = "softmax") -> None:
        super().__init__()
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}.")
        self.activation = activation

    def forward(self, logits) -> torch.Tensor:
        outputs = list(logits.unbind(1)) if isinstance(logits, torch.Tensor) else list(logits)
        if len(outputs) < 2:
            raise ValueError(f"the reciprocal loss needs at least two generators, got {len(outputs)}.")
        probs = [
            torch.softmax(o.float(), 1) if self.activation == "softmax" else torch.sigmoid(o.float()) for o in outputs
        ]
        pairs = list(itertools.combinations(probs, 2))
        return sum((a - b).abs().mean() for a, b in pairs) / len(pairs)
