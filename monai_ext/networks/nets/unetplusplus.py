"""UNet++ (Zhou et al., "UNet++: A Nested U-Net Architecture for Medical Image Segmentation", DLMIA 2018,
Fig. 1) on MONAI's ``BasicUNetPlusPlus``, returning one tensor."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from monai.networks.nets import BasicUNetPlusPlus
from monai.networks.nets.basic_unet import UpCat
from torch import nn

__all__ = ["UNetPlusPlus"]


class UNetPlusPlus(nn.Module):
    """UNet++ with the paper's topology, one output tensor, and deep supervision for training.

    MONAI's ``BasicUNetPlusPlus`` supplies the nested nodes ``X^{i,j}``. Two changes make it the paper's
    (official Keras ``Nest_Net``) network: the nodes of the top row upsample ``X^{1,j-1}`` to the top
    row's width (MONAI keeps the coarser width there, which equals it only for its default features), and
    without deep supervision the three unused heads are removed. It then has exactly the official
    parameter counts: 9,041,601 with one head and 9,041,700 with the four deep-supervision heads, for
    widths ``(32, 64, 128, 256, 512)``, ReLU, no normalisation, 1 input and 1 output channel.

    Output:
        - training with ``deep_supervision``: the four heads ``X^{0,1..4}`` stacked on dimension 1,
          ``(B, 4, out_channels, *spatial)`` (MONAI's ``DynUNet`` convention; see
          :class:`monai_ext.losses.DeepSupervisionLoss`);
        - otherwise one tensor ``(B, out_channels, *spatial)``: the logits of ``X^{0,4}`` or, with
          ``ensemble``, the average of the four heads' probabilities (the paper's "accurate mode"),
          returned as log-probabilities (``"softmax"``) or logits (``"sigmoid"``) so that the usual
          post-processing applies unchanged.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        features: widths of the five levels, each double the previous (the paper: 32..512).
        deep_supervision: build the four heads ``X^{0,1..4}`` and return them all in training.
        ensemble: ``None`` (head ``X^{0,4}``), ``"softmax"`` or ``"sigmoid"`` (average of the four heads'
            probabilities under that activation); needs ``deep_supervision``.
        act: activation (ReLU in the paper; MONAI's default is LeakyReLU).
        norm: normalisation (none in the paper; batch or instance norm train faster).
        dropout: dropout after every convolution (0.5 in the official Keras model).
        upsample: MONAI ``UpSample`` mode (``"deconv"``: the paper's 2x2 transposed convolution).

    Raises:
        ValueError: ``features`` not five doubling widths, or ``ensemble`` without ``deep_supervision``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        features: Sequence[int] = (32, 64, 128, 256, 512),
        deep_supervision: bool = True,
        ensemble: Optional[str] = None,
        act: Union[str, tuple] = "relu",
        norm: Union[str, tuple, None] = None,
        dropout: float = 0.0,
        upsample: str = "deconv",
    ) -> None:
        super().__init__()
        fea = list(features)
        if len(fea) != 5 or any(fea[i + 1] != 2 * fea[i] for i in range(4)):
            raise ValueError(f"features must be five widths, each double the previous (e.g. 32..512), got {features}.")
        if ensemble not in (None, "softmax", "sigmoid"):
            raise ValueError(f"ensemble must be None, 'softmax' or 'sigmoid', got {ensemble!r}.")
        if ensemble is not None and not deep_supervision:
            raise ValueError("ensemble averages the deep-supervision heads: it needs deep_supervision=True.")
        self.deep_supervision = deep_supervision
        self.ensemble = "" if ensemble is None else ensemble
        net = BasicUNetPlusPlus(
            spatial_dims,
            in_channels,
            out_channels,
            fea + [fea[0]],
            deep_supervision,
            act,
            norm,
            True,
            dropout,
            upsample,
        )
        for j in range(1, 5):
            setattr(
                net,
                f"upcat_0_{j}",
                UpCat(spatial_dims, fea[1], fea[0] * j, fea[0], act, norm, True, dropout, upsample, halves=True),
            )
        if not deep_supervision:
            for j in range(1, 4):
                setattr(net, f"final_conv_0_{j}", nn.Identity())
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heads = self.net(x)
        if not self.deep_supervision:
            return heads[0]
        if self.training:
            return torch.stack(heads, dim=1)
        if self.ensemble == "softmax":
            return torch.log(torch.stack([torch.softmax(h, dim=1) for h in heads]).mean(0))
        if self.ensemble == "sigmoid":
            return torch.logit(torch.stack([torch.sigmoid(h) for h in heads]).mean(0))
        return heads[-1]
