"""MADGNet's blocks (Nam et al., "Modality-agnostic Domain Generalizable Medical Image Segmentation by
Multi-Frequency in Multi-Scale Attention", CVPR 2024, Fig. 1): the MFMSA block and the E-SDM head."""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Act, Conv, Norm
from torch import nn

from monai_ext.networks.blocks.dct_attention import FrequencySelection, MultiFrequencyChannelAttention

__all__ = ["MFMSABlock", "ESDM"]


def _interp_mode(spatial_dims: int) -> str:
    return "bilinear" if spatial_dims == 2 else "trilinear"


class _ScaleBranch(nn.Module):
    """One scale of the MFMSA block: down-sampling, a dilated grouped 3x3 convolution and a 1x1
    projection, MFCA (multi-frequency channel attention), then MSSA (spatial attention mixing foreground
    and background) and a 3x3 convolution back to the block's width."""

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        scale: int,
        branch_channels: int,
        dct_size,
        frequencies: FrequencySelection,
        groups: int,
        min_resolution: int,
    ) -> None:
        super().__init__()
        conv, norm, act = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims], Act[Act.RELU]
        self.factor = 2**scale
        self.min_resolution = min_resolution
        self.spatial_dims = spatial_dims
        self.features = nn.Sequential(
            conv(channels, channels, 3, padding=1 + scale, dilation=1 + scale, groups=groups, bias=False),
            norm(channels),
            act(inplace=True),
            conv(channels, branch_channels, 1, bias=False),
            norm(branch_channels),
            act(inplace=True),
        )
        self.mfca = MultiFrequencyChannelAttention(spatial_dims, branch_channels, dct_size, frequencies, reduction=16)
        # MSSA: a one-channel spatial map F; alpha weights the background term (1 - F), beta the foreground F
        self.spatial = nn.Sequential(conv(branch_channels, 1, 1, bias=False), nn.Sigmoid())
        self.alpha = nn.Parameter(torch.ones(1))
        self.beta = nn.Parameter(torch.ones(1))
        self.project = nn.Sequential(
            conv(branch_channels, channels, 3, padding=1, bias=False), norm(channels), act(inplace=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        y = x
        if self.factor > 1 and min(int(s) // self.factor for s in size) >= self.min_resolution:
            y = F.avg_pool2d(x, self.factor) if self.spatial_dims == 2 else F.avg_pool3d(x, self.factor)
        z = self.mfca(self.features(y))
        attention = self.spatial(z)
        z = self.project(z * (1 - attention) * self.alpha + z * attention * self.beta)
        if z.shape[2:] != size:
            z = F.interpolate(z, size=size, mode=_interp_mode(self.spatial_dims), align_corners=False)
        return z


class MFMSABlock(nn.Module):
    """Multi-frequency in multi-scale attention (MADGNet Fig. 1 right, Sec. 3.1).

    ``S`` scale branches see the input average-pooled by ``1, 2, ..., 2**(S-1)`` (a branch runs at full
    resolution when pooling would leave fewer than ``min_resolution`` voxels along an axis). Branch ``s``
    has width ``max(C / 2**s, min_channel)``, a grouped 3x3 convolution with dilation ``1 + s`` (receptive
    field 3, 5, 7), MFCA and MSSA; the branches are resized back, averaged and added to the input:
    ``Y = X + (1/S) sum_s branch_s(X)``.

    Args:
        spatial_dims: 2 (the paper) or 3.
        channels: block width ``C`` (divisible by ``groups``).
        scale_branches: ``S`` (3 in the official configuration).
        frequencies: MFCA frequencies (``"top16"`` in 2D; ``"low16"`` is the 3D default of MADGNet).
        dct_size: MFCA's DCT grid (the official code picks it from ``C``: 32 -> 112, 64 -> 56, 128 -> 28,
            256 -> 14, 512 -> 7).
        min_channel: smallest branch width (32 officially).
        min_resolution: smallest pooled size per axis (8).
        groups: groups of the dilated convolutions (32).

    Unlike the official code, the size test looks at every axis (the official one only at the height) and
    the branch output is resized to the input's size rather than scaled by ``2**s``, so input sizes whose
    pooled maps are odd (e.g. 544) do not crash.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        scale_branches: int = 3,
        frequencies: FrequencySelection = "top16",
        dct_size: Union[int, Sequence[int]] = 7,
        min_channel: int = 32,
        min_resolution: int = 8,
        groups: int = 32,
    ) -> None:
        super().__init__()
        if scale_branches < 1:
            raise ValueError(f"scale_branches must be >= 1, got {scale_branches}.")
        if channels % groups != 0:
            raise ValueError(f"channels ({channels}) must be divisible by groups ({groups}).")
        self.branches = nn.ModuleList(
            _ScaleBranch(
                spatial_dims,
                channels,
                s,
                max(channels // 2**s, min_channel),
                dct_size,
                frequencies,
                groups,
                min_resolution,
            )
            for s in range(scale_branches)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(x)
        for branch in self.branches:
            total = total + branch(x)
        return x + total / len(self.branches)


class ESDM(nn.Module):
    """Ensemble sub-decoding module (MADGNet Fig. 2 right, Sec. 3.2): the core task predicted from the
    sub-tasks.

    Three 1x1 convolutions give the region, distance and boundary logits of each class. Top-down at the
    feature's resolution: ``d = conv_d(x) * sigmoid(c)`` and ``b = conv_b(x) * sigmoid(d)``. Bottom-up
    after upsampling by ``scale_factor``: ``T_b = up(b)``, ``T_d = up(d) + sigmoid(T_b)``,
    ``T_c = up(c) + sigmoid(T_d)``.

    Returns:
        ``(T_c, T_d, T_b)``, each ``(B, out_channels, *spatial * scale_factor)``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, scale_factor: int) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.region = conv(in_channels, out_channels, 1)
        self.distance = conv(in_channels, out_channels, 1)
        self.boundary = conv(in_channels, out_channels, 1)
        self.scale_factor = float(scale_factor)
        self.mode = _interp_mode(spatial_dims)

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale_factor == 1.0:
            return x
        return F.interpolate(x, scale_factor=self.scale_factor, mode=self.mode, align_corners=True)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        region = self.region(x)
        distance = self.distance(x) * torch.sigmoid(region)
        boundary = self.boundary(x) * torch.sigmoid(distance)
        boundary = self._up(boundary)
        distance = self._up(distance) + torch.sigmoid(boundary)
        region = self._up(region) + torch.sigmoid(distance)
        return region, distance, boundary
