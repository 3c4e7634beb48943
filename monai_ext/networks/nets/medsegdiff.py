"""MedSegDiff as the paper describes it (Wu et al., "MedSegDiff: Medical Image Segmentation with Diffusion
Probabilistic Model", MIDL 2023, Fig. 1-2), in 2D and 3D.

The denoiser ``eps_theta(x_t, I, t) = D(E^I + E^x_t, t)`` (Eq. 3): a noisy-mask encoder ``E^x``, a raw-image
encoder ``E^I`` and a U-Net decoder ``D``. **Dynamic conditional encoding** (Sec. 2.1): at every scale the
mask feature ``m`` is first filtered by an **FF-Parser** (Sec. 2.2) and then modulates the image feature
``c`` of that scale, ``A(c, m) = (LN(c) * LN(m)) * c``; a time-conditioned residual block refines the result,
which is added to the mask path. At the bottleneck the image encoding is added to the mask encoding.

The image encoder sees only the image, so its features are computed once per image (``encode_image``)
and reused at every sampling step and by every ensemble member (``denoise``); the official code's
"new" version recomputes its image network at every step, and its default path runs neither the
FF-Parser nor the dynamic encoding (see the bundle's docs/README.md).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Pool
from monai.networks.nets.diffusion_model_unet import DiffusionUNetResnetBlock, get_timestep_embedding
from monai.utils import ensure_tuple_rep
from torch import nn

from monai_ext.networks.blocks.ff_parser import FFParser

__all__ = ["MedSegDiff"]


class _SelfAttention(nn.Module):
    """Single-head self-attention over all voxels with a residual (the guided-diffusion block MedSegDiff uses).

    MONAI's ``SpatialAttentionBlock`` does the same but cannot be compiled by TorchScript, which the bundle
    export needs; this one uses ``scaled_dot_product_attention``.
    """

    def __init__(self, spatial_dims: int, channels: int, groups: int) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = conv(channels, 3 * channels, 1)
        self.proj = conv(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, -1).transpose(2, 3).unbind(1)  # (B, N, C) each
        out = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)
        return x + self.proj(out.transpose(1, 2).reshape(x.shape))


class _ChannelLayerNorm(nn.Module):
    """Layer norm over the channels of every voxel, with a learnable gain (as lucidrains' re-implementation)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.movedim(1, -1), (x.shape[1],), eps=1e-5) * self.gain
        return y.movedim(-1, 1)


class _ImageBlock(nn.Module):
    """Residual block of the image encoder: GroupNorm-SiLU-conv twice, no time input (the image has none)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.body = nn.Sequential(
            nn.GroupNorm(groups, in_channels),
            nn.SiLU(),
            conv(in_channels, out_channels, 3, padding=1),
            nn.GroupNorm(groups, out_channels),
            nn.SiLU(),
            conv(out_channels, out_channels, 3, padding=1),
        )
        self.skip = conv(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class _Fusion(nn.Module):
    """Dynamic conditional encoding at one scale: FF-Parser on the mask feature, then
    ``(LN(c) * LN(m)) * c`` and a time-conditioned residual block."""

    def __init__(
        self, spatial_dims: int, channels: int, size: Sequence[int], temb: int, groups: int, ff_parser: bool
    ) -> None:
        super().__init__()
        self.parser = FFParser(spatial_dims, channels, size) if ff_parser else nn.Identity()
        self.norm_image = _ChannelLayerNorm(channels)
        self.norm_mask = _ChannelLayerNorm(channels)
        self.refine = DiffusionUNetResnetBlock(spatial_dims, channels, temb, channels, norm_num_groups=groups)

    def forward(self, mask: torch.Tensor, image: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if image.shape[0] != mask.shape[0]:  # ensemble members share one image encoding
            image = image.repeat_interleave(mask.shape[0] // image.shape[0], dim=0)
        m = self.parser(mask)
        return self.refine((self.norm_image(image) * self.norm_mask(m)) * image, emb)


class MedSegDiff(nn.Module):
    """The MedSegDiff denoiser; see the module docstring.

    ``forward(x, timesteps=None, context=None)`` takes ``x = cat([x_t, image])`` (the noisy mask's
    ``mask_channels`` first, then the image's ``image_channels``), as MONAI's ``DiffusionInferer`` passes it in
    ``"concat"`` mode, and returns the prediction for ``x_t`` (noise or clean mask, as trained);
    ``timesteps`` defaults to 0. The sampler calls :meth:`encode_image` once and :meth:`denoise` per step.

    Args:
        spatial_dims: 2 or 3.
        image_channels: image channels.
        mask_channels: mask channels (1: one binary mask; K: K binary class masks).
        spatial_size: window size; the FF-Parsers' weight maps are defined on its scales, so inputs must
            have this size (each level halves it).
        channels: widths of the levels.
        num_res_blocks: time-conditioned residual blocks per level of the mask encoder and the decoder.
        attention_levels: levels with self-attention; the bottleneck always has one.
        norm_num_groups: GroupNorm groups.
        ff_parser: use the FF-Parser before each fusion (the paper; off = ablation).
        dynamic_encoding: fuse the image into the mask path at every scale (the paper; off: only at the
            bottleneck).

    Raises:
        ValueError: ``spatial_size`` not divisible by ``2 ** (len(channels) - 1)``, or mismatched level lists.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        image_channels: int = 1,
        mask_channels: int = 1,
        spatial_size: Union[int, Sequence[int]] = 64,
        channels: Sequence[int] = (32, 64, 128, 256),
        num_res_blocks: int = 1,
        attention_levels: Optional[Sequence[bool]] = None,
        norm_num_groups: int = 8,
        ff_parser: bool = True,
        dynamic_encoding: bool = True,
    ) -> None:
        super().__init__()
        size = list(ensure_tuple_rep(spatial_size, spatial_dims))
        levels = len(channels)
        if any(s % 2 ** (levels - 1) for s in size):
            raise ValueError(f"spatial_size {size} must be divisible by 2**{levels - 1} for {levels} levels.")
        attention = list(attention_levels) if attention_levels is not None else [False] * (levels - 1) + [True]
        if len(attention) != levels:
            raise ValueError(f"attention_levels needs one value per level ({levels}), got {attention_levels}.")
        conv = Conv[Conv.CONV, spatial_dims]
        self.spatial_dims = spatial_dims
        self.mask_channels = mask_channels
        self.image_channels = image_channels
        self.spatial_size = size
        self.dynamic_encoding = dynamic_encoding
        self.base = channels[0]
        temb = 4 * channels[0]
        self.time_embed = nn.Sequential(nn.Linear(channels[0], temb), nn.SiLU(), nn.Linear(temb, temb))

        self.mask_stem = conv(mask_channels, channels[0], 3, padding=1)
        self.image_stem = conv(image_channels, channels[0], 3, padding=1)
        self.mask_down = nn.ModuleList()
        self.image_down = nn.ModuleList()
        self.fusions = nn.ModuleList()
        self.mask_attention = nn.ModuleList()
        previous = channels[0]
        for level, width in enumerate(channels):
            blocks = [
                DiffusionUNetResnetBlock(
                    spatial_dims, previous if i == 0 else width, temb, width, norm_num_groups=norm_num_groups
                )
                for i in range(num_res_blocks)
            ]
            self.mask_down.append(nn.ModuleList(blocks))
            self.image_down.append(_ImageBlock(spatial_dims, previous, width, norm_num_groups))
            self.mask_attention.append(
                _SelfAttention(spatial_dims, width, norm_num_groups) if attention[level] else nn.Identity()
            )
            level_size = [s // 2**level for s in size]
            self.fusions.append(
                _Fusion(spatial_dims, width, level_size, temb, norm_num_groups, ff_parser)
                if dynamic_encoding
                else nn.Identity()
            )
            previous = width
        self.pool = Pool[Pool.AVG, spatial_dims](2)
        self.mid = nn.ModuleList(
            [
                DiffusionUNetResnetBlock(spatial_dims, previous, temb, previous, norm_num_groups=norm_num_groups),
                DiffusionUNetResnetBlock(spatial_dims, previous, temb, previous, norm_num_groups=norm_num_groups),
            ]
        )
        self.mid_attention = _SelfAttention(spatial_dims, previous, norm_num_groups)

        self.up = nn.ModuleList()
        self.up_attention = nn.ModuleList()
        for level in range(levels - 1, -1, -1):
            width = channels[level]
            blocks = [
                DiffusionUNetResnetBlock(
                    spatial_dims, (previous + width) if i == 0 else width, temb, width, norm_num_groups=norm_num_groups
                )
                for i in range(num_res_blocks)
            ]
            self.up.append(nn.ModuleList(blocks))
            self.up_attention.append(
                _SelfAttention(spatial_dims, width, norm_num_groups) if attention[level] else nn.Identity()
            )
            previous = width
        self.out = nn.Sequential(
            nn.GroupNorm(norm_num_groups, previous), nn.SiLU(), conv(previous, mask_channels, 3, padding=1)
        )
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def _down(self, x: torch.Tensor, level: int) -> torch.Tensor:
        return self.pool(x) if level < len(self.mask_down) - 1 else x

    def encode_image(self, image: torch.Tensor) -> List[torch.Tensor]:
        """The image encoding ``E^I``: one feature map per level (the last one is the bottleneck's)."""
        features: List[torch.Tensor] = []
        c = self.image_stem(image)
        for level, block in enumerate(self.image_down):
            c = block(c)
            features.append(c)
            c = self._down(c, level)
        return features

    def denoise(self, x_t: torch.Tensor, timesteps: torch.Tensor, image_features: List[torch.Tensor]) -> torch.Tensor:
        """The prediction for ``x_t`` at ``timesteps`` given :meth:`encode_image`'s features (repeated when
        ``x_t`` holds several ensemble members per image)."""
        if list(x_t.shape[2:]) != self.spatial_size:
            raise ValueError(
                f"MedSegDiff was built for windows of {self.spatial_size} (its FF-Parsers' frequency grids), got "
                f"{list(x_t.shape[2:])}; run it in a sliding window of that size."
            )
        emb = self.time_embed(get_timestep_embedding(timesteps, self.base).to(x_t.dtype))
        m = self.mask_stem(x_t)
        skips: List[torch.Tensor] = []
        for level, (blocks, attention, fusion) in enumerate(zip(self.mask_down, self.mask_attention, self.fusions)):
            for block in blocks:
                m = block(m, emb)
            m = attention(m)
            if self.dynamic_encoding:
                m = m + fusion(m, image_features[level], emb)
            skips.append(m)
            m = self._down(m, level)
        bottleneck = image_features[-1]
        if bottleneck.shape[0] != m.shape[0]:
            bottleneck = bottleneck.repeat_interleave(m.shape[0] // bottleneck.shape[0], dim=0)
        m = m + bottleneck  # E^I + E^x
        m = self.mid_attention(self.mid[0](m, emb))
        m = self.mid[1](m, emb)
        for i, (blocks, attention) in enumerate(zip(self.up, self.up_attention)):
            skip = skips[len(skips) - 1 - i]
            if m.shape[2:] != skip.shape[2:]:
                m = F.interpolate(m, size=skip.shape[2:], mode="nearest")
            m = torch.cat([m, skip], dim=1)
            for block in blocks:
                m = block(m, emb)
            m = attention(m)
        return self.out(m)

    def forward(
        self, x: torch.Tensor, timesteps: Optional[torch.Tensor] = None, context: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        x_t, image = x[:, : self.mask_channels], x[:, self.mask_channels :]
        if image.shape[1] != self.image_channels:
            raise ValueError(
                f"MedSegDiff expects {self.mask_channels} noisy-mask + {self.image_channels} image channels, "
                f"got {x.shape[1]} in total."
            )
        if timesteps is None:
            timesteps = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return self.denoise(x_t, timesteps, self.encode_image(image))
