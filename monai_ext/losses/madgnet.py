"""MADGNet's deep-supervision loss over the region, distance and boundary outputs of every decoder stage."""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

__all__ = ["structure_loss", "madgnet_targets", "MADGNetLoss"]


def _avg_pool(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """``avg_pool(x, kernel, stride=1, padding=kernel // 2)`` (zero padding counted) as one 1D pass per axis.

    A box filter is separable: ``d * kernel`` operations per voxel instead of ``kernel ** d`` (31^3 in 3D).
    """
    pool = F.avg_pool2d if x.dim() == 4 else F.avg_pool3d
    nd = x.dim() - 2
    for axis in range(nd):
        size = [1] * nd
        size[axis] = kernel
        pad = [0] * nd
        pad[axis] = kernel // 2
        x = pool(x, size, stride=1, padding=pad)
    return x


def structure_loss(logits: torch.Tensor, target: torch.Tensor, kernel: int = 31) -> torch.Tensor:
    """PraNet's structure loss (Fan et al., MICCAI 2020, Eq. 1): boundary-weighted BCE + weighted IoU.

    ``w = 1 + 5 |avgpool_k(target) - target|`` (``k = 31``); both terms are normalised by ``sum(w)`` per image
    and channel; the IoU term has +1 smoothing. Mean over images and channels.
    """
    dims = list(range(2, logits.dim()))
    weight = 1 + 5 * torch.abs(_avg_pool(target, kernel) - target)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    wbce = (weight * bce).sum(dims) / weight.sum(dims)
    prob = torch.sigmoid(logits)
    inter = (prob * target * weight).sum(dims)
    union = ((prob + target) * weight).sum(dims)
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return (wbce + wiou).mean()


def madgnet_targets(mask: torch.Tensor, boundary_width: int = 2) -> Tuple[torch.Tensor, torch.Tensor]:
    """Distance and boundary targets of a one-hot mask ``(B, C, *spatial)``.

    - distance: the Euclidean distance of each foreground voxel to the background (SciPy's exact EDT),
      divided by its maximum per image and class (0 outside, 1 at the deepest point);
    - boundary: the band ``dilate(mask) XOR erode(mask)`` of half-width ``boundary_width`` (the official
      repository's helper makes such a band by dilation XOR erosion).
    """
    k = 2 * boundary_width + 1
    pool = F.max_pool2d if mask.dim() == 4 else F.max_pool3d
    dilated = pool(mask, k, stride=1, padding=boundary_width)
    eroded = -pool(-mask, k, stride=1, padding=boundary_width)
    boundary = (dilated - eroded).clamp(0, 1)
    binary = mask.detach().cpu().numpy() > 0.5
    distance = np.zeros(binary.shape, dtype=np.float32)
    for index in np.ndindex(binary.shape[:2]):
        if binary[index].any():
            edt = ndimage.distance_transform_edt(binary[index])
            distance[index] = edt / edt.max()
    return torch.from_numpy(distance).to(mask.device), boundary


class MADGNetLoss(nn.Module):
    """``sum_i w_i (L_region + L_distance + L_boundary)`` over MADGNet's four decoder stages.

    ``L_region`` is :func:`structure_loss` on ``T_c``; ``L_distance`` the MSE between ``sigmoid(T_d)`` and the
    normalised distance map; ``L_boundary`` BCE-with-logits between ``T_b`` and the boundary band (targets:
    :func:`madgnet_targets`). The paper publishes neither the weights nor the sub-task targets; the
    defaults (every stage and task weight 1) follow PraNet's equal side-output weights, which the authors
    name as their training basis.

    Args:
        stage_weights: ``w_1..w_4`` (coarsest first).
        task_weights: weights of the region, distance and boundary terms.
        boundary_width: half-width of the boundary band, in voxels.
        include_background: with more than one output channel, also supervise channel 0.

    ``forward(pred, target)``: ``pred`` is MADGNet's training output ``(B, 4, 3, C, *spatial)`` (a single
    map ``(B, C, *spatial)`` is scored with the region term only); ``target`` a label map ``(B, 1, *spatial)``
    of class indices (``C == 1``: foreground = label > 0) or one-hot ``(B, C, *spatial)``.
    """

    def __init__(
        self,
        stage_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        task_weights: Sequence[float] = (1.0, 1.0, 1.0),
        boundary_width: int = 2,
        include_background: bool = True,
    ) -> None:
        super().__init__()
        if len(task_weights) != 3:
            raise ValueError(f"task_weights must give region, distance and boundary weights, got {task_weights}.")
        self.stage_weights = [float(w) for w in stage_weights]
        self.task_weights = [float(w) for w in task_weights]
        self.boundary_width = boundary_width
        self.include_background = include_background

    def _one_hot(self, target: torch.Tensor, channels: int) -> torch.Tensor:
        if target.shape[1] == channels and channels > 1:
            return target.float()
        labels = target[:, 0].long()
        if channels == 1:
            return (labels > 0).float().unsqueeze(1)
        return F.one_hot(labels, channels).movedim(-1, 1).float()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        single = pred.dim() == target.dim()
        channels = pred.shape[1] if single else pred.shape[3]
        mask = self._one_hot(target, channels)
        if not self.include_background and channels > 1:
            mask = mask[:, 1:]
            pred = pred[:, 1:] if single else pred[:, :, :, 1:]
        if single:
            return self.task_weights[0] * structure_loss(pred.float(), mask)
        if pred.shape[1] != len(self.stage_weights):
            raise ValueError(f"pred has {pred.shape[1]} stages, stage_weights {len(self.stage_weights)}.")
        distance, boundary = madgnet_targets(mask, self.boundary_width)
        total = torch.zeros((), device=pred.device)
        for w, stage in zip(self.stage_weights, pred.float().unbind(1)):
            region, dist, bound = stage.unbind(1)
            total = total + w * (
                self.task_weights[0] * structure_loss(region, mask)
                + self.task_weights[1] * F.mse_loss(torch.sigmoid(dist), distance)
                + self.task_weights[2] * F.binary_cross_entropy_with_logits(bound, boundary)
            )
        return total
