"""Hi-gMISnet (Showrav and Hasan, Phys. Med. Biol. 69(11) 115019, 2024): a multi-resolution U-Net generator
with DWT multilayer/multiresolution fusion in the encoder and dual-mode attention gates in the decoder,
trained as two generator-discriminator pairs (pGAN) with a reciprocal loss.

The authors published no code; the architecture is reconstructed from the paper's text and figure titles
(``../shared/research/architectures.md`` section 3) and every choice is stated in the bundle's docs.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Union

import torch
from monai.networks.layers.factories import Conv
from monai.networks.nets import PatchDiscriminator
from torch import nn

from monai_ext.networks.blocks.dwt import DWT
from monai_ext.networks.blocks.higmis import DualModeAttentionGate, DWTFusionDown, MultiResBlock, ResPath

__all__ = ["HiGMISGenerator", "HiGMISnet", "PairedPatchDiscriminator"]


class _EncoderLevel(nn.Module):
    """DWT fusion down-sampling, then a MultiRes block."""

    def __init__(self, down: DWTFusionDown, block: MultiResBlock) -> None:
        super().__init__()
        self.down = down
        self.block = block

    def forward(self, feature: torch.Tensor, image_subbands: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.block(self.down(feature, image_subbands))


class HiGMISGenerator(nn.Module):
    """One Hi-gMISnet generator.

    Encoder: a MultiRes block per level (``U = filters * 2**l``); between levels, :class:`DWTFusionDown`
    down-samples by a Haar DWT keeping every subband of the features and adds the level's DWT subbands of the
    input image. Decoder: a transposed convolution up, a ResPath on the skip (lengths 4, 3, 2, 1), the
    :class:`DualModeAttentionGate` on the skip guided by the upsampled feature, concatenation, a MultiRes
    block. A 1x1 convolution gives the logits.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: classes.
        filters: ``U`` of the first level (32 in MultiResUNet).
        levels: number of levels (5: four down-samplings).
        wavelet: the DWT's wavelet (Haar: exact 2x down-sampling).
        alpha: MultiRes width factor (1.67).
        use_image_subbands: add the input image's DWT subbands at every level (the multiresolution fusion).

    Raises:
        ValueError: (at run time) spatial sizes not divisible by ``2 ** (levels - 1)``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        filters: int = 32,
        levels: int = 5,
        wavelet: str = "haar",
        alpha: float = 1.67,
        use_image_subbands: bool = True,
    ) -> None:
        super().__init__()
        if levels < 2:
            raise ValueError(f"levels must be >= 2, got {levels}.")
        self.levels = levels
        self.use_image_subbands = use_image_subbands
        self.dwt = DWT(spatial_dims, wavelet, levels=1, mode="periodization")
        self.first = MultiResBlock(spatial_dims, in_channels, filters, alpha)
        channels = self.first.out_channels
        widths: List[int] = [channels]
        self.encoder = nn.ModuleList()
        for level in range(1, levels):
            down = DWTFusionDown(spatial_dims, channels, in_channels if use_image_subbands else 0, channels, wavelet)
            block = MultiResBlock(spatial_dims, channels, filters * 2**level, alpha)
            self.encoder.append(_EncoderLevel(down, block))
            channels = block.out_channels
            widths.append(channels)
        conv, up = Conv[Conv.CONV, spatial_dims], Conv[Conv.CONVTRANS, spatial_dims]
        self.up = nn.ModuleList()
        self.respaths = nn.ModuleList()
        self.gates = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in range(levels - 2, -1, -1):
            u = filters * 2**level
            self.up.append(up(channels, u, 2, stride=2))
            self.respaths.append(ResPath(spatial_dims, widths[level], levels - 1 - level))
            self.gates.append(DualModeAttentionGate(spatial_dims, widths[level], u, max(u // 2, 1)))
            block = MultiResBlock(spatial_dims, u + widths[level], u, alpha)
            self.decoder.append(block)
            channels = block.out_channels
        self.head = conv(channels, out_channels, 1)

    def image_pyramid(self, image: torch.Tensor) -> List[torch.Tensor]:
        """The input image's DWT subbands at levels 1 .. levels-1 (``(B, C * 2**d, H / 2**l, ...)`` each)."""
        pyramid: List[torch.Tensor] = []
        approx = image
        for _ in range(self.levels - 1):
            low, details = self.dwt(approx)
            pyramid.append(torch.cat([low.unsqueeze(2), details[0]], dim=2).flatten(1, 2))
            approx = low
        return pyramid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 1 << (self.levels - 1)
        for s in x.shape[2:]:
            if int(s) % factor != 0:
                raise ValueError(f"Hi-gMISnet needs spatial sizes divisible by {factor}, got {list(x.shape[2:])}.")
        pyramid: List[torch.Tensor] = self.image_pyramid(x) if self.use_image_subbands else []
        y = self.first(x)
        skips: List[torch.Tensor] = [y]
        for level, stage in enumerate(self.encoder):
            y = stage(y, pyramid[level] if self.use_image_subbands else None)
            skips.append(y)
        y = skips.pop()
        for up, respath, gate, block in zip(self.up, self.respaths, self.gates, self.decoder):
            y = up(y)
            skip = gate(respath(skips.pop()), y)
            y = block(torch.cat([y, skip], dim=1))
        return self.head(y)


class HiGMISnet(nn.Module):
    """The pGAN's generators and their fusion: what the bundle runs at inference.

    ``forward`` returns, in training, every generator's logits stacked ``(B, G, C, ...)``; in evaluation the
    fusion of the generators (the average of their class probabilities), as log-probabilities
    (``activation="softmax"``) or logits (``"sigmoid"``), so the usual post-processing applies.

    Args:
        num_generators: generators trained in parallel (2 in the paper's pGAN).
        activation: ``"softmax"`` (classes, the bundle's default) or ``"sigmoid"`` (one binary map).
        pretrained: a local checkpoint loaded into the first encoder levels of every generator
            (partial hybrid transfer learning), see :meth:`load_partial`.
        pretrained_levels: how many encoder levels to take from ``pretrained``.
        freeze_levels: how many encoder levels (from the first) to freeze.
        **kwargs: :class:`HiGMISGenerator` arguments.
    """

    def __init__(
        self,
        num_generators: int = 2,
        activation: str = "softmax",
        pretrained: Optional[Union[str, Path]] = None,
        pretrained_levels: int = 2,
        freeze_levels: int = 0,
        **kwargs,
    ) -> None:
        super().__init__()
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}.")
        if num_generators < 1:
            raise ValueError(f"num_generators must be >= 1, got {num_generators}.")
        self.activation = activation
        self.generators = nn.ModuleList(HiGMISGenerator(**kwargs) for _ in range(num_generators))
        if pretrained is not None:
            self.load_partial(pretrained, pretrained_levels)
        self.freeze(freeze_levels)

    def load_partial(self, path: Union[str, Path], levels: int) -> List[str]:
        """Partial hybrid transfer learning: copy the first ``levels`` encoder levels (the first MultiRes block,
        then each DWT fusion + MultiRes block) of every generator from a local checkpoint (``weights_only=True``;
        a state dict of a :class:`HiGMISGenerator`, or of this class, whose first generator is used).
        Returns the keys copied."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        state = {k.split("generators.0.", 1)[1] if k.startswith("generators.0.") else k: v for k, v in state.items()}
        wanted = ["first."] + [f"encoder.{i}." for i in range(levels - 1)]
        picked = {k: v for k, v in state.items() if any(k.startswith(p) for p in wanted)}
        if not picked:
            raise ValueError(f"{path}: no encoder weights ({', '.join(wanted)}...) in the checkpoint.")
        for generator in self.generators:
            missing_here = [k for k in picked if k not in generator.state_dict()]
            if missing_here:
                raise ValueError(f"{path}: keys {missing_here[:3]} do not fit the generator.")
            generator.load_state_dict(picked, strict=False)
        return sorted(picked)

    def freeze(self, levels: int) -> None:
        """Freeze the first ``levels`` encoder levels of every generator (0: train everything)."""
        for generator in self.generators:
            for i, part in enumerate([generator.first] + list(generator.encoder)):
                for p in part.parameters():
                    p.requires_grad_(i >= levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [g(x) for g in self.generators]
        if self.training:
            return torch.stack(outputs, dim=1)
        if self.activation == "softmax":
            return torch.log(torch.stack([torch.softmax(o, dim=1) for o in outputs]).mean(0))
        return torch.logit(torch.stack([torch.sigmoid(o) for o in outputs]).mean(0), eps=1e-6)


class PairedPatchDiscriminator(nn.Module):
    """One image-conditioned PatchGAN per generator (MONAI's ``PatchDiscriminator``; input: image and mask
    concatenated; output: per-patch real/fake logits).

    ``forward(image, masks)`` scores ``masks`` ``(B, G, C, ...)`` (one per generator) each with its own
    discriminator: ``(B, G, 1, ...)`` patch logits. One call scores every pair, so that the module can be
    wrapped in DistributedDataParallel (one forward per backward)."""

    def __init__(
        self,
        num_discriminators: int = 2,
        spatial_dims: int = 2,
        in_channels: int = 1,
        mask_channels: int = 2,
        channels: int = 64,
        num_layers_d: int = 3,
    ) -> None:
        super().__init__()
        self.num_layers_d = num_layers_d
        self.discriminators = nn.ModuleList(
            PatchDiscriminator(spatial_dims, channels, in_channels + mask_channels, 1, num_layers_d=num_layers_d)
            for _ in range(num_discriminators)
        )

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        smallest = 2 ** (self.num_layers_d + 2)  # each layer halves; the last layers need more than one voxel
        if min(image.shape[2:]) < smallest:
            raise ValueError(
                f"PairedPatchDiscriminator: input {tuple(image.shape[2:])} is too small for num_layers_d={self.num_layers_d}"
                f" (each side needs >= {smallest}); lower num_layers_d."
            )
        scores = [d(torch.cat([image, masks[:, k]], dim=1))[-1] for k, d in enumerate(self.discriminators)]
        return torch.stack(scores, dim=1)
