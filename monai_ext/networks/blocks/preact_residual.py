"""Pre-activation residual unit (He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016, Fig. 4e)."""

from __future__ import annotations

from typing import Union

import torch
from monai.networks.blocks import ADN
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_norm_layer
from torch import nn

__all__ = ["PreActivationResidualUnit"]


class PreActivationResidualUnit(nn.Module):
    """``x -> [norm-act-conv(stride)] -> [norm-act-conv] + shortcut(x)``.

    The unit of ResUNet (Zhang et al. 2018, Fig. 2 and Table 1) and of ResUNet++ (Jha et al. 2019). The
    shortcut is a 1x1 convolution with the unit's stride followed by a normalisation (a projection) when
    the number of channels or the size changes, the identity otherwise.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        strides: stride of the first convolution (2 halves the size, as ResUNet down-samples).
        kernel_size: kernel size of both convolutions.
        norm: normalisation (MONAI name or (name, args)); batch norm in both papers.
        act: activation; ReLU in both papers.
        first: the first unit of the network (ResUNet's level 1, ResUNet++'s stem), which sees the raw
            input: its first convolution is not preceded by a normalisation and activation.
        bias: whether the convolutions have a bias (the official Keras models do).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        strides: int = 1,
        kernel_size: int = 3,
        norm: Union[str, tuple] = "batch",
        act: Union[str, tuple] = "relu",
        first: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        pad = kernel_size // 2
        layers = [] if first else [ADN("NA", in_channels, act=act, norm=norm, norm_dim=spatial_dims)]
        layers += [
            conv(in_channels, out_channels, kernel_size, stride=strides, padding=pad, bias=bias),
            ADN("NA", out_channels, act=act, norm=norm, norm_dim=spatial_dims),
            conv(out_channels, out_channels, kernel_size, padding=pad, bias=bias),
        ]
        self.residual = nn.Sequential(*layers)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels or strides != 1:
            self.shortcut = nn.Sequential(
                conv(in_channels, out_channels, 1, stride=strides, bias=bias),
                get_norm_layer(norm, spatial_dims, out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.shortcut(x)
