"""MADGNet (Nam et al., "Modality-agnostic Domain Generalizable Medical Image Segmentation by Multi-Frequency
in Multi-Scale Attention", CVPR 2024, Fig. 1), in 2D (the paper) and 3D."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Act, Conv, Norm
from monai.networks.nets import ResNet
from torch import nn

from monai_ext.networks.blocks.mfmsa import ESDM, MFMSABlock
from monai_ext.networks.nets.resnest import ResNeSt, StagedEncoder

__all__ = ["MADGNet", "official_dct_size", "convert_resnest_state_dict"]

# MFCA's DCT grid by block width in the official code (FcaNet's sizes for 224-pixel ImageNet models)
OFFICIAL_DCT_SIZE = {32: 112, 64: 56, 128: 28, 256: 14, 512: 7}
BACKBONES = ("resnest50", "resnet50")


def official_dct_size(channels: int) -> int:
    if channels not in OFFICIAL_DCT_SIZE:
        raise ValueError(f"the official DCT grid is defined for widths {sorted(OFFICIAL_DCT_SIZE)}, got {channels}.")
    return OFFICIAL_DCT_SIZE[channels]


def convert_resnest_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename an official ResNeSt (or timm ``resnest50d``) state dict to :class:`ResNeSt`'s keys; drops ``fc``."""
    out = {}
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        key = re.sub(r"^conv1\.(\d+)\.", r"stem.\1.", key)
        key = re.sub(r"^bn1\.", "stem.7.", key)
        key = re.sub(r"^layer(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}.", key)
        out[key] = value
    return out


class _ResNetFeatures(StagedEncoder):
    """MONAI's ResNet-50 as a feature encoder: stem (1/2), then the four stages (1/4 ... 1/32)."""

    def __init__(self, spatial_dims: int, in_channels: int) -> None:
        super().__init__()
        net = ResNet(
            "bottleneck",
            [3, 4, 6, 3],
            [64, 128, 256, 512],
            spatial_dims,
            in_channels,
            num_classes=1,
            bias_downsample=False,
        )
        self.stem = nn.Sequential(net.conv1, net.bn1, net.act)
        self.maxpool = net.maxpool
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.out_channels = [64, 256, 512, 1024, 2048]


class _DecoderStage(nn.Module):
    """x2 upsampling, concatenation with the skip, 3x3 conv-BN-ReLU, MFMSA, 3x3 conv-BN-ReLU."""

    def __init__(
        self, spatial_dims: int, in_channels: int, skip_channels: int, out_channels: int, attention: MFMSABlock
    ) -> None:
        super().__init__()
        conv, norm, act = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims], Act[Act.RELU]
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"
        self.conv1 = nn.Sequential(
            conv(in_channels + skip_channels, out_channels, 3, padding=1), norm(out_channels), act(inplace=True)
        )
        self.attention = attention
        self.conv2 = nn.Sequential(
            conv(out_channels, out_channels, 3, padding=1), norm(out_channels), act(inplace=True)
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[2:], mode=self.mode, align_corners=False)
        return self.conv2(self.attention(self.conv1(torch.cat([x, skip], dim=1))))


class MADGNet(nn.Module):
    """MADGNet: a CNN encoder, 1x1 skip projections to 64 channels, four decoder stages with MFMSA blocks,
    and an E-SDM head with deep supervision at every stage.

    Output:
        - training: every stage's ``(T_c, T_d, T_b)`` stacked, ``(B, 4, 3, out_channels, *spatial)``
          (stage 1 = coarsest; tasks = region, distance, boundary), for :class:`monai_ext.losses.MADGNetLoss`;
        - evaluation: ``T_c`` of the finest stage, ``(B, out_channels, *spatial)`` logits (apply a sigmoid;
          each class is its own binary map, as in the paper).

    Args:
        spatial_dims: 2 (the paper) or 3.
        in_channels: input channels. The 2D encoder takes 3 (ImageNet); a 1-channel input is repeated to 3,
            as the official code does. The 3D encoder takes ``in_channels``.
        out_channels: classes (1 in the paper: one binary map).
        backbone: ``"resnest50"`` (official default) or ``"resnet50"`` (MONAI's ResNet-50).
        scale_branches: MFMSA's ``S`` (3 officially).
        frequencies: MFCA frequencies (default ``"top16"`` in 2D, ``"low16"`` in 3D).
        min_channel: smallest MFMSA branch width (32 officially).
        min_resolution: smallest MFMSA pooled size (8).
        groups: groups of MFMSA's dilated convolutions (32).
        decoder_channels: widths of the four decoder stages (256, 128, 64, 32).
        skip_channels: width of the skip projections (64).
        dct_sizes: MFCA grid per decoder stage; default: the official width-keyed sizes in 2D
            (14, 28, 56, 112) and 7 per axis in 3D.
        backbone_layers: bottlenecks per encoder stage for ``"resnest50"`` (default ``(3, 4, 6, 3)``;
            fewer, e.g. ``(1, 1, 1, 1)``, make a lighter encoder for volumes).
        pretrained_backbone: a local file with encoder weights, loaded with ``weights_only=True`` (official or
            timm ResNeSt key names are converted); nothing is downloaded.

    Raises:
        ValueError: an unknown backbone, or (at run time) spatial sizes that are not multiples of 32.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        backbone: str = "resnest50",
        scale_branches: int = 3,
        frequencies: Optional[Union[str, Sequence[Sequence[int]]]] = None,
        min_channel: int = 32,
        min_resolution: int = 8,
        groups: int = 32,
        decoder_channels: Sequence[int] = (256, 128, 64, 32),
        skip_channels: int = 64,
        dct_sizes: Optional[Sequence[int]] = None,
        backbone_layers: Sequence[int] = (3, 4, 6, 3),
        pretrained_backbone: Optional[Union[str, Path]] = None,
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}.")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if len(decoder_channels) != 4:
            raise ValueError(f"decoder_channels must give four widths, got {decoder_channels}.")
        self.encoder_channels = 3 if spatial_dims == 2 else in_channels
        if backbone == "resnest50":
            self.encoder: nn.Module = ResNeSt(spatial_dims, self.encoder_channels, backbone_layers)
        else:
            self.encoder = _ResNetFeatures(spatial_dims, self.encoder_channels)
        if pretrained_backbone is not None:
            self.load_backbone(pretrained_backbone)
        frequencies = frequencies or ("top16" if spatial_dims == 2 else "low16")
        if dct_sizes is None:
            dct_sizes = [official_dct_size(c) for c in decoder_channels] if spatial_dims == 2 else [7] * 4
        conv, norm, act = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims], Act[Act.RELU]
        enc = self.encoder.out_channels  # [f1, f2, f3, f4, f5]
        self.skips = nn.ModuleList(
            nn.Sequential(conv(c, skip_channels, 1), norm(skip_channels), act(inplace=True))
            for c in (enc[3], enc[2], enc[1], enc[0])
        )
        self.decoder = nn.ModuleList()
        previous = enc[4]
        for width, dct in zip(decoder_channels, dct_sizes):
            attention = MFMSABlock(
                spatial_dims, width, scale_branches, frequencies, dct, min_channel, min_resolution, groups
            )
            self.decoder.append(_DecoderStage(spatial_dims, previous, skip_channels, width, attention))
            previous = width
        self.heads = nn.ModuleList(
            ESDM(spatial_dims, c, out_channels, 2 ** (4 - i)) for i, c in enumerate(decoder_channels)
        )

    def load_backbone(self, path: Union[str, Path]) -> None:
        """Load encoder weights from a local file (a state dict, or a dict with ``state_dict``/``model``)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and ("state_dict" in state or "model" in state):
            state = state.get("state_dict", state.get("model"))
        if isinstance(self.encoder, ResNeSt):
            state = convert_resnest_state_dict(state)
        missing, unexpected = self.encoder.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path}: not weights of this encoder (missing {missing[:3]}..., unexpected {unexpected[:3]}...)."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sizes: List[int] = [int(s) for s in x.shape[2:]]
        for s in sizes:
            if s % 32 != 0:
                valid = [max(32, (v // 32) * 32) for v in sizes]
                raise ValueError(
                    f"MADGNet needs spatial sizes divisible by 32 (5 down-samplings), got {sizes}; e.g. {valid}."
                )
        if x.shape[1] == 1 and self.encoder_channels == 3:
            x = x.repeat_interleave(3, dim=1)
        features = self.encoder(x)
        y = features[4]
        outputs: List[torch.Tensor] = []
        for i, (skip, stage, head) in enumerate(zip(self.skips, self.decoder, self.heads)):
            y = stage(y, skip(features[3 - i]))
            if self.training or i == 3:
                region, distance, boundary = head(y)
                outputs.append(torch.stack([region, distance, boundary], dim=1))
        if self.training:
            return torch.stack(outputs, dim=1)
        return outputs[-1][:, 0]
