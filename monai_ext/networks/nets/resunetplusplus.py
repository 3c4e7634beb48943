"""ResUNet++: Jha et al., "ResUNet++: An Advanced Architecture for Medical Image Segmentation",
IEEE International Symposium on Multimedia (ISM) 2019, Fig. 1."""

from __future__ import annotations

from typing import Sequence, Union

import torch
from monai.networks.blocks import ADN, ChannelSELayer
from monai.networks.layers.factories import Conv, Pool
from monai.networks.layers.utils import get_norm_layer
from torch import nn

from monai_ext.networks.blocks.preact_residual import PreActivationResidualUnit

__all__ = ["ResUNetPlusPlus", "SummedASPP", "ResUNetPlusPlusAttention"]


def _squeeze_excitation(spatial_dims: int, channels: int, ratio: int) -> ChannelSELayer:
    """MONAI's SE block with the official model's bias-free linear layers (Hu et al. 2018 has biases)."""
    se = ChannelSELayer(spatial_dims, channels, r=ratio)
    se.fc[0] = nn.Linear(channels, channels // ratio, bias=False)
    se.fc[2] = nn.Linear(channels // ratio, channels, bias=False)
    return se


class SummedASPP(nn.Module):
    """ResUNet++'s atrous spatial pyramid pooling: parallel dilated 3x3 convolutions, each followed by a
    normalisation, **summed** (not concatenated as in DeepLab and MONAI's ``SimpleASPP``), then a 1x1 convolution.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels of every branch and of the block.
        dilations: one branch per dilation; the paper's ``(1, 6, 12, 18)``.
        norm: normalisation after each branch.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        dilations: Sequence[int] = (1, 6, 12, 18),
        norm: Union[str, tuple] = "batch",
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.branches = nn.ModuleList(
            nn.Sequential(
                conv(in_channels, out_channels, 3, padding=d, dilation=d),
                get_norm_layer(norm, spatial_dims, out_channels),
            )
            for d in dilations
        )
        self.project = conv(out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.zeros(1, device=x.device, dtype=x.dtype)
        for branch in self.branches:
            y = y + branch(x)
        return self.project(y)


class ResUNetPlusPlusAttention(nn.Module):
    """ResUNet++'s attention block on a decoder feature ``x`` guided by the finer encoder feature ``g``.

    ``g`` -> norm-act-conv3x3 -> max-pool 2 (to ``x``'s size); ``x`` -> norm-act-conv3x3; their sum ->
    norm-act-conv3x3 -> multiplied with ``x``. There is no sigmoid: the map is a full-channel feature, as in
    the official model (unlike the additive gate of Attention U-Net).
    """

    def __init__(
        self,
        spatial_dims: int,
        g_channels: int,
        x_channels: int,
        norm: Union[str, tuple] = "batch",
        act: Union[str, tuple] = "relu",
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]

        def nac(cin: int) -> nn.Sequential:
            return nn.Sequential(
                ADN("NA", cin, act=act, norm=norm, norm_dim=spatial_dims), conv(cin, x_channels, 3, padding=1)
            )

        self.g_path = nn.Sequential(nac(g_channels), Pool[Pool.MAX, spatial_dims](2))
        self.x_path = nac(x_channels)
        self.gate = nac(x_channels)

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.g_path(g) + self.x_path(x)) * x


class ResUNetPlusPlus(nn.Module):
    """ResUNet++ (Jha et al. 2019).

    Stem (residual unit on the raw input) and residual units with stride 2; an ASPP bridge; per decoder
    level an attention block (encoder skip guides the decoder feature), nearest-neighbour x2 upsampling,
    concatenation with the skip and a residual unit. Every residual unit, encoder and decoder, ends in
    squeeze-and-excitation (the official model's ``resnet_block``). An ASPP and a 1x1 convolution give the
    output logits (the paper applies a sigmoid; the bundle's loss and post-processing do). No deep
    supervision.

    Args:
        spatial_dims: 2 (the paper) or 3.
        in_channels: input channels (3 in the paper).
        out_channels: output channels (1 in the paper).
        channels: encoder widths, the last being the bridge; paper ``(16, 32, 64, 128, 256)``. The decoder
            widths are the encoder's, reversed, without the first (``128, 64, 32``).
        se_ratio: squeeze-and-excitation reduction (8 in the official model).
        aspp_dilations: dilations of both ASPP blocks, paper ``(1, 6, 12, 18)``.
        norm: normalisation; batch norm in the paper.
        act: activation; ReLU in the paper.

    At the paper's defaults with 3 input channels and 1 output the network has 4,062,993 parameters, the
    official model's count.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        se_ratio: int = 8,
        aspp_dilations: Sequence[int] = (1, 6, 12, 18),
        norm: Union[str, tuple] = "batch",
        act: Union[str, tuple] = "relu",
    ) -> None:
        super().__init__()
        if len(channels) < 3:
            raise ValueError(f"channels must give at least three widths (stem, one level, bridge), got {channels}.")
        if min(channels[:-1]) // se_ratio < 1:
            raise ValueError(f"se_ratio ({se_ratio}) is larger than the narrowest level ({min(channels[:-1])}).")
        unit = PreActivationResidualUnit
        enc = list(channels[:-1])
        self.encoder = nn.ModuleList()
        for i, width in enumerate(enc):
            first = i == 0
            block = unit(
                spatial_dims,
                in_channels if first else enc[i - 1],
                width,
                strides=1 if first else 2,
                norm=norm,
                act=act,
                first=first,
            )
            self.encoder.append(nn.Sequential(block, _squeeze_excitation(spatial_dims, width, se_ratio)))
        self.bridge = SummedASPP(spatial_dims, enc[-1], channels[-1], aspp_dilations, norm)

        self.attention = nn.ModuleList()
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        x_width = channels[-1]
        for skip_width, out_width in zip(reversed(enc[:-1]), reversed(enc[1:])):
            self.attention.append(ResUNetPlusPlusAttention(spatial_dims, skip_width, x_width, norm, act))
            self.upsample.append(nn.Upsample(scale_factor=2, mode="nearest"))
            block = unit(spatial_dims, x_width + skip_width, out_width, norm=norm, act=act)
            self.decoder.append(nn.Sequential(block, _squeeze_excitation(spatial_dims, out_width, se_ratio)))
            x_width = out_width
        self.output_aspp = SummedASPP(spatial_dims, x_width, enc[0], aspp_dilations, norm)
        self.head = Conv[Conv.CONV, spatial_dims](enc[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
        x = self.bridge(skips.pop())
        for attention, up, level in zip(self.attention, self.upsample, self.decoder):
            skip = skips.pop()
            x = level(torch.cat([up(attention(skip, x)), skip], dim=1))
        return self.head(self.output_aspp(x))
