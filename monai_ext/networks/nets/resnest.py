"""ResNeSt (Zhang et al., "ResNeSt: Split-Attention Networks", CVPRW 2022), in 2D and 3D, as a feature encoder.

timm has ResNeSt in 2D only, and timm cannot be imported beside this project's CPU PyTorch build (it
requires torchvision, whose PyPI wheels do not load beside it); MADGNet needs the encoder in 2D and 3D,
so it is written here with MONAI's layer factories. The 2D network at the defaults is ResNeSt-50 as the
MADGNet code uses it: radix 2, cardinality 1, bottleneck width 64, deep stem of width 32, average-pool
down-sampling in the shortcuts (``avg_down``) and in the 3x3 branch after the split attention (``avd``).
"""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Act, Conv, Norm, Pool
from torch import nn

__all__ = ["SplitAttentionConv", "ResNeStBottleneck", "ResNeSt", "StagedEncoder"]


class StagedEncoder(nn.Module):
    """A ResNet-style encoder as a feature pyramid: ``stem`` (1/2), ``maxpool``, then ``stages`` (1/4 ... 1/32).

    ``forward`` returns the stem's output and every stage's, finest first. Subclasses set the modules and
    ``out_channels``.
    """

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.stem(x)
        features = [x]
        x = self.maxpool(x)
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class SplitAttentionConv(nn.Module):
    """Split-attention convolution (ResNeSt Fig. 2 right): a grouped convolution producing ``radix``
    splits, whose sum is pooled and passed through two 1x1 convolutions and an r-softmax over the splits
    to weight them.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        channels: output channels.
        kernel_size: of the grouped convolution.
        stride: of the grouped convolution.
        radix: number of splits per cardinal group (2 in ResNeSt-50).
        cardinality: number of cardinal groups (1 in ResNeSt-50).
        reduction_factor: the attention's hidden width is ``max(in_channels * radix // reduction_factor, 32)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        radix: int = 2,
        cardinality: int = 1,
        reduction_factor: int = 4,
    ) -> None:
        super().__init__()
        conv, norm = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims]
        inter = max(in_channels * radix // reduction_factor, 32)
        self.radix, self.cardinality, self.channels = radix, cardinality, channels
        self.conv = conv(
            in_channels, channels * radix, kernel_size, stride, kernel_size // 2, groups=cardinality * radix, bias=False
        )
        self.bn0 = norm(channels * radix)
        self.fc1 = conv(channels, inter, 1, groups=cardinality)
        self.bn1 = norm(inter)
        self.fc2 = conv(inter, channels * radix, 1, groups=cardinality)
        self.act = Act[Act.RELU](inplace=True)
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn0(self.conv(x)))
        b = x.shape[0]
        splits = x.reshape([b, self.radix, self.channels] + list(x.shape[2:]))
        gap = self.pool(splits.sum(1))
        attention = self.fc2(self.act(self.bn1(self.fc1(gap))))  # (B, channels * radix, 1, ...)
        # r-softmax: over the radix splits within each cardinal group
        attention = attention.reshape(b, self.cardinality, self.radix, -1).transpose(1, 2)
        attention = torch.softmax(attention, dim=1) if self.radix > 1 else torch.sigmoid(attention)
        attention = attention.reshape([b, self.radix, self.channels] + [1] * (x.dim() - 2))
        return (splits * attention).sum(1)


class _AvgDown(nn.Module):
    """3x3 average pooling with stride ``stride`` and zero padding 1 (padding counted, as ResNeSt's ``avd``).

    PyTorch's 3D average pooling rejects inputs smaller than the kernel even when padding covers it (2D
    does not); padding first and pooling without padding is the same operation and works at any size.
    """

    def __init__(self, spatial_dims: int, stride: int) -> None:
        super().__init__()
        self.spatial_dims, self.stride = spatial_dims, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial_dims == 2:
            return F.avg_pool2d(x, 3, self.stride, 1)
        return F.avg_pool3d(F.pad(x, [1, 1, 1, 1, 1, 1]), 3, self.stride, 0)


class ResNeStBottleneck(nn.Module):
    """ResNeSt bottleneck: 1x1 conv, split-attention 3x3 conv, (average-pool down-sampling), 1x1 conv to
    ``4 * planes``, plus a shortcut (average pool then 1x1 conv when the shape changes), then ReLU."""

    expansion = 4

    def __init__(
        self, spatial_dims: int, in_channels: int, planes: int, stride: int = 1, radix: int = 2, cardinality: int = 1
    ) -> None:
        super().__init__()
        conv, norm = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims]
        avg = Pool[Pool.AVG, spatial_dims]
        width = planes * cardinality
        out = planes * self.expansion
        self.conv1 = conv(in_channels, width, 1, bias=False)
        self.bn1 = norm(width)
        self.conv2 = SplitAttentionConv(spatial_dims, width, width, 3, 1, radix, cardinality)
        self.avd = _AvgDown(spatial_dims, stride) if stride > 1 else nn.Identity()
        self.conv3 = conv(width, out, 1, bias=False)
        self.bn3 = norm(out)
        self.act = Act[Act.RELU](inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out:
            pool = avg(stride, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
            self.downsample = nn.Sequential(pool, conv(in_channels, out, 1, bias=False), norm(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        y = self.avd(self.conv2(y))
        y = self.bn3(self.conv3(y))
        return self.act(y + self.downsample(x))


class ResNeSt(StagedEncoder):
    """ResNeSt encoder returning the features of every stage.

    ``forward(x)`` returns ``[f1, f2, f3, f4, f5]``: the stem output at 1/2 resolution (``2 * stem_width``
    channels) and the four stages at 1/4, 1/8, 1/16 and 1/32 (``256, 512, 1024, 2048`` channels for
    ResNeSt-50). There is no classifier.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (3 for ImageNet weights).
        layers: bottlenecks per stage; ``(3, 4, 6, 3)`` is ResNeSt-50.
        stem_width: width of the deep stem's first convolutions.
        radix: split-attention radix.
        cardinality: cardinal groups.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        layers: Sequence[int] = (3, 4, 6, 3),
        stem_width: int = 32,
        radix: int = 2,
        cardinality: int = 1,
    ) -> None:
        super().__init__()
        conv, norm = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims]
        act = Act[Act.RELU]
        self.stem = nn.Sequential(
            conv(in_channels, stem_width, 3, 2, 1, bias=False),
            norm(stem_width),
            act(inplace=True),
            conv(stem_width, stem_width, 3, 1, 1, bias=False),
            norm(stem_width),
            act(inplace=True),
            conv(stem_width, stem_width * 2, 3, 1, 1, bias=False),
            norm(stem_width * 2),
            act(inplace=True),
        )
        self.maxpool = Pool[Pool.MAX, spatial_dims](3, 2, 1)
        self.stages = nn.ModuleList()
        channels = stem_width * 2
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stage = []
            for j in range(blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                stage.append(ResNeStBottleneck(spatial_dims, channels, planes, stride, radix, cardinality))
                channels = planes * ResNeStBottleneck.expansion
            self.stages.append(nn.Sequential(*stage))
        self.out_channels = [stem_width * 2, 256, 512, 1024, 2048]
