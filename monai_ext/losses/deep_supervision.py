"""Deep-supervision loss for networks that return their heads stacked in one tensor."""

from __future__ import annotations

from typing import List, Union

import torch
from monai.losses import DeepSupervisionLoss as _MonaiDeepSupervisionLoss

__all__ = ["DeepSupervisionLoss"]


class DeepSupervisionLoss(_MonaiDeepSupervisionLoss):
    """MONAI's ``DeepSupervisionLoss`` that also takes the heads stacked on dimension 1.

    A network whose forward must return a single tensor (TorchScript, bundle checks) returns its
    deep-supervision heads as ``(B, heads, C, *spatial)`` in training (MONAI's ``DynUNet`` does the same);
    this loss unstacks them and weights the per-head losses as MONAI's does (``weight_mode`` ``"same"``,
    ``"exp"``, ``"two"`` or explicit ``weights``; the first head gets the first weight). A tensor with the
    target's number of dimensions is a single head.
    """

    def forward(self, input: Union[torch.Tensor, List[torch.Tensor]], target: torch.Tensor) -> torch.Tensor:  # noqa: A002
        if isinstance(input, torch.Tensor) and input.dim() == target.dim() + 1:
            input = list(torch.unbind(input, dim=1))
        return super().forward(input, target)
