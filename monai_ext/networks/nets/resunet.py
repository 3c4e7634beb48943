"""ResUNet: the deep residual U-Net of Zhang, Liu and Wang, "Road Extraction by Deep Residual U-Net",
IEEE Geoscience and Remote Sensing Letters 15(5), 2018 (arXiv 1711.10684), Fig. 2 and Table 1."""

from __future__ import annotations

from typing import Sequence, Union

import torch
from monai.networks.blocks import UpSample
from monai.networks.layers.factories import Conv
from torch import nn

from monai_ext.networks.blocks.preact_residual import PreActivationResidualUnit

__all__ = ["ResUNet"]


class ResUNet(nn.Module):
    """Deep residual U-Net (Zhang et al. 2018).

    Encoder: a first residual unit at full resolution, then one pre-activation residual unit per level whose
    first convolution has stride 2 (no pooling); the last of them is the bridge. Decoder: per level, x2
    upsampling, concatenation with the encoder feature of that level, one residual unit. A 1x1 convolution
    gives the output logits (the paper applies a sigmoid; the bundle's loss and post-processing do).
    With the paper's widths ``(64, 128, 256, 512)`` that is the paper's 15 convolution layers.

    Args:
        spatial_dims: 2 (the paper) or 3.
        in_channels: input channels (3 for the paper's RGB images).
        out_channels: output channels (1 in the paper: one sigmoid map).
        channels: widths of the levels, the last being the bridge; paper ``(64, 128, 256, 512)``.
        norm: normalisation; batch norm in the paper.
        act: activation; ReLU in the paper.
        upsample: ``"nontrainable"`` (the paper's parameter-free upsampling, nearest neighbour) or
            ``"deconv"`` (transposed convolution, as some ports do).

    At the paper's defaults with 3 input channels and 1 output the network has 8,223,809 parameters (the
    paper quotes 7.8 M; see docs of the ``resunet`` bundle).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        channels: Sequence[int] = (64, 128, 256, 512),
        norm: Union[str, tuple] = "batch",
        act: Union[str, tuple] = "relu",
        upsample: str = "nontrainable",
    ) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"channels must give at least two levels (encoder and bridge), got {channels}.")
        if upsample not in ("nontrainable", "deconv"):
            raise ValueError(f"upsample must be 'nontrainable' or 'deconv', got {upsample!r}.")
        self.depth = len(channels) - 1
        unit = PreActivationResidualUnit
        self.encoder = nn.ModuleList(
            [unit(spatial_dims, in_channels, channels[0], norm=norm, act=act, first=True)]
            + [
                unit(spatial_dims, channels[i - 1], channels[i], strides=2, norm=norm, act=act)
                for i in range(1, len(channels))
            ]
        )
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in range(len(channels) - 1, 0, -1):
            self.upsample.append(
                UpSample(
                    spatial_dims, channels[i], channels[i], 2, mode=upsample, interp_mode="nearest", align_corners=None
                )
            )
            self.decoder.append(unit(spatial_dims, channels[i] + channels[i - 1], channels[i - 1], norm=norm, act=act))
        self.head = Conv[Conv.CONV, spatial_dims](channels[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
        x = skips.pop()  # the bridge
        for up, level in zip(self.upsample, self.decoder):
            x = level(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)
