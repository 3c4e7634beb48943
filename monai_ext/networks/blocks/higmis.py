"""Blocks of the Hi-gMISnet generator (Showrav and Hasan, "Hi-gMISnet: generalized medical image
segmentation using DWT based multilayer fusion and dual mode attention into high resolution pGAN",
Phys. Med. Biol. 69(11) 115019, 2024).

The paper's code was never published; these blocks reconstruct the figures' names (see the bundle's
docs/README.md for every choice): MultiResUNet's MultiRes block and ResPath (Ibtehaz and Rahman, Neural
Networks 2020; the "multi-resolution U-Net" of the paper's title, by the same group), the DWT multilayer /
multiresolution fusion of the encoder, and the dual-mode attention gate of the decoder.
"""

from __future__ import annotations

from typing import Optional

import torch
from monai.networks.blocks import ChannelSELayer
from monai.networks.layers.factories import Act, Conv, Norm
from monai.networks.nets.attentionunet import AttentionBlock
from torch import nn

from monai_ext.networks.blocks.dwt import DWT

__all__ = ["MultiResBlock", "ResPath", "DWTFusionDown", "DualModeAttentionGate"]


def _conv_bn(spatial_dims: int, cin: int, cout: int, kernel: int, act: bool = True) -> nn.Sequential:
    layers = [
        Conv[Conv.CONV, spatial_dims](cin, cout, kernel, padding=kernel // 2),
        Norm[Norm.BATCH, spatial_dims](cout),
    ]
    if act:
        layers.append(Act[Act.RELU](inplace=True))
    return nn.Sequential(*layers)


class MultiResBlock(nn.Module):
    """MultiResUNet's MultiRes block (Ibtehaz and Rahman 2020, Fig. 3b): three chained 3x3 conv-BN-ReLU of
    ``W/6, W/3, W/2`` filters (``W = alpha * U``, ``alpha = 1.67``), concatenated (receptive fields 3, 5, 7),
    batch-normalised, plus a 1x1 conv-BN shortcut, ReLU, batch norm.

    ``out_channels`` (the sum of the three widths) is what the next layer sees.
    """

    def __init__(self, spatial_dims: int, in_channels: int, u: int, alpha: float = 1.67) -> None:
        super().__init__()
        w = alpha * u
        widths = [int(w * 0.167), int(w * 0.333), int(w * 0.5)]
        self.out_channels = sum(widths)
        self.conv3 = _conv_bn(spatial_dims, in_channels, widths[0], 3)
        self.conv5 = _conv_bn(spatial_dims, widths[0], widths[1], 3)
        self.conv7 = _conv_bn(spatial_dims, widths[1], widths[2], 3)
        self.norm = Norm[Norm.BATCH, spatial_dims](self.out_channels)
        self.shortcut = _conv_bn(spatial_dims, in_channels, self.out_channels, 1, act=False)
        self.act = Act[Act.RELU](inplace=True)
        self.out_norm = Norm[Norm.BATCH, spatial_dims](self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv3(x)
        b = self.conv5(a)
        c = self.conv7(b)
        y = self.norm(torch.cat([a, b, c], dim=1)) + self.shortcut(x)
        return self.out_norm(self.act(y))


class ResPath(nn.Module):
    """MultiResUNet's ResPath (Fig. 4): ``length`` residual units (3x3 conv-BN-ReLU + 1x1 conv-BN shortcut,
    ReLU, BN) on a skip connection, narrowing the semantic gap between encoder and decoder features."""

    def __init__(self, spatial_dims: int, channels: int, length: int) -> None:
        super().__init__()
        self.units = nn.ModuleList(
            nn.ModuleDict(
                {
                    "conv": _conv_bn(spatial_dims, channels, channels, 3),
                    "shortcut": _conv_bn(spatial_dims, channels, channels, 1, act=False),
                    "norm": Norm[Norm.BATCH, spatial_dims](channels),
                }
            )
            for _ in range(length)
        )
        self.act = Act[Act.RELU](inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.units:
            x = unit["norm"](self.act(unit["conv"](x) + unit["shortcut"](x)))
        return x


class DWTFusionDown(nn.Module):
    """DWT multilayer and multiresolution fusion: the encoder's down-sampling step (Hi-gMISnet, "DWT based
    multilayer and multi-resolution feature fusion").

    - **multilayer**: the encoder feature is down-sampled by a one-level DWT instead of max pooling, and all
      its ``2**d`` subbands (approximation and details) are kept;
    - **multiresolution**: the level-``l`` DWT subbands of the **input image** (same resolution) are added;
    - a 1x1 conv-BN-ReLU fuses ``(features + image) x 2**d`` subband channels to ``out_channels``.

    ``forward(feature, image_subbands)``: ``image_subbands`` is the input image's level-``l`` subbands,
    ``(B, C_img * 2**d, ...)``, or ``None`` when built with ``image_channels=0`` (features only).
    """

    def __init__(
        self, spatial_dims: int, feature_channels: int, image_channels: int, out_channels: int, wavelet: str = "haar"
    ) -> None:
        super().__init__()
        bands = 2**spatial_dims
        self.dwt = DWT(spatial_dims, wavelet, levels=1, mode="periodization")
        self.fuse = _conv_bn(spatial_dims, (feature_channels + image_channels) * bands, out_channels, 1)

    def subbands(self, x: torch.Tensor) -> torch.Tensor:
        """All ``2**d`` one-level subbands of ``x`` as channels, ``(B, C * 2**d, ...)`` (subbands of a channel adjacent)."""
        approx, details = self.dwt(x)
        return torch.cat([approx.unsqueeze(2), details[0]], dim=2).flatten(1, 2)

    def forward(self, feature: torch.Tensor, image_subbands: Optional[torch.Tensor] = None) -> torch.Tensor:
        bands = self.subbands(feature)
        if image_subbands is not None:
            bands = torch.cat([bands, image_subbands], dim=1)
        return self.fuse(bands)


class DualModeAttentionGate(nn.Module):
    """Dual-mode attention gate (Hi-gMISnet's DAG) on a skip connection ``x`` guided by the decoder's ``g``.

    Mode 1, spatial: the additive attention gate of Attention U-Net (Oktay et al. 2018; MONAI's
    ``AttentionBlock``: ``x * sigmoid(psi(ReLU(W_g g + W_x x)))``). Mode 2, channel: squeeze-and-excitation
    of ``x`` (MONAI's ``ChannelSELayer``). The gate applies both: ``x * spatial * channel``.

    Args:
        spatial_dims: 2 or 3.
        skip_channels: channels of ``x``.
        gate_channels: channels of ``g`` (at ``x``'s resolution).
        inter_channels: width of the additive gate's hidden layer.
        reduction: SE reduction ratio.
    """

    def __init__(
        self, spatial_dims: int, skip_channels: int, gate_channels: int, inter_channels: int, reduction: int = 8
    ) -> None:
        super().__init__()
        self.spatial = AttentionBlock(spatial_dims, inter_channels, gate_channels, skip_channels)
        self.channel = ChannelSELayer(spatial_dims, skip_channels, r=max(1, min(reduction, skip_channels)))

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return self.channel(self.spatial(g=g, x=x))
