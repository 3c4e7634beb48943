"""Channel attention from several discrete cosine transform (DCT) frequencies, in 2D and 3D.

Global average pooling is the lowest frequency of the DCT-II (up to a scale); FcaNet (Qin et al.,
"FcaNet: Frequency Channel Attention Networks", ICCV 2021) replaces it with several DCT coefficients.
Two ways of using them are provided:

- :class:`MultiSpectralChannelAttention` (FcaNet, Sec. 3.3): the channels are split into ``K`` groups and
  group ``k`` is pooled with the basis image of frequency ``k``; an SE-style MLP makes the channel weights.
- :class:`MultiFrequencyChannelAttention` (MADGNet's MFCA, Nam et al., CVPR 2024, Fig. 1 right): every
  frequency is applied to every channel; each product is reduced by global average, max and min pooling,
  each statistic is averaged over the ``K`` frequencies, and one shared MLP turns the three vectors into
  channel weights ``sigmoid(MLP(avg) + MLP(max) + MLP(min))``.

The DCT basis is the orthonormal DCT-II: in 1D ``b_u(i) = c_u cos(pi u (i + 1/2) / N)`` with
``c_0 = 1/sqrt(N)`` and ``c_u = sqrt(2/N)`` otherwise; the nD basis image of frequency ``(u, v, ...)`` is the
product over axes, so ``sum(x * B_(u,v))`` equals ``scipy.fft.dctn(x, norm="ortho")[u, v]``. Inputs of another
size are first average-pooled (adaptively) to the DCT grid, as both papers do. The bases are constants
computed in float64 at construction, cast to the input's dtype when used, and kept out of the state dict.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import List, Sequence, Tuple, Union

import torch
from monai.networks.layers.factories import Pool
from monai.utils import ensure_tuple_rep
from torch import nn

__all__ = [
    "FCANET_TOP_FREQUENCIES",
    "dct_frequencies",
    "dct_basis",
    "MultiSpectralChannelAttention",
    "MultiFrequencyChannelAttention",
]

# FcaNet's ranking of the 49 frequencies of a 7x7 DCT grid by the ImageNet accuracy of a one-frequency
# attention (FcaNet Fig. 4), best first: the 32 best as (u, v), u along the height.
FCANET_TOP_FREQUENCIES: Tuple[Tuple[int, int], ...] = (
    (0, 0), (0, 1), (6, 0), (0, 5), (0, 2), (1, 0), (1, 2), (4, 0),
    (5, 0), (1, 6), (3, 0), (0, 4), (0, 6), (0, 3), (3, 5), (2, 2),
    (4, 6), (6, 3), (3, 3), (5, 3), (5, 5), (2, 1), (6, 1), (5, 2),
    (5, 4), (3, 2), (3, 1), (4, 1), (2, 3), (2, 0), (6, 5), (1, 3),
)  # fmt: skip

REFERENCE_GRID = 7
FrequencySelection = Union[str, Sequence[Sequence[int]]]


def _lowest(k: int, spatial_dims: int) -> List[Tuple[int, ...]]:
    """The ``k`` lowest frequencies of a 7-point grid: by total index, then largest index, then lexicographic."""
    grid = itertools.product(range(REFERENCE_GRID), repeat=spatial_dims)
    return sorted(grid, key=lambda f: (sum(f), max(f), f))[:k]


def dct_frequencies(selection: FrequencySelection, spatial_dims: int, dct_size: Sequence[int]) -> List[Tuple[int, ...]]:
    """Resolve a frequency selection to frequency indices on a DCT grid of ``dct_size``.

    Args:
        selection: ``"topK"``: the ``K <= 32`` best frequencies of FcaNet's ranking (2D only: the ranking
            was measured on 2D images); ``"lowK"``: the ``K`` lowest frequencies (any dimension), ordered by
            the sum of the indices, then the largest index, then lexicographically. Both are defined on a
            7-point grid per axis and multiplied by ``dct_size // 7`` (at least 1), as FcaNet does, so that
            a selection means the same frequencies at every grid size. Or an explicit sequence of
            ``spatial_dims``-tuples of indices on the actual grid, used as given.
        spatial_dims: 2 or 3.
        dct_size: the DCT grid size per spatial axis.

    Raises:
        ValueError: an unknown selection string, ``K`` out of range, ``"top"`` outside 2D, tuples of the
            wrong length, or frequencies outside the grid.
    """
    if isinstance(selection, str):
        match = re.fullmatch(r"(top|low)(\d+)", selection)
        if match is None:
            raise ValueError(f"frequencies must be 'topK', 'lowK' or a list of index tuples, got {selection!r}.")
        kind, k = match.group(1), int(match.group(2))
        if kind == "top":
            if spatial_dims != 2:
                raise ValueError(
                    f"frequencies='{selection}': FcaNet's ranking exists for 2D only; for spatial_dims="
                    f"{spatial_dims} use 'lowK' or an explicit list."
                )
            if not 1 <= k <= len(FCANET_TOP_FREQUENCIES):
                raise ValueError(f"frequencies='{selection}': K must be in 1..{len(FCANET_TOP_FREQUENCIES)}.")
            base: List[Tuple[int, ...]] = list(FCANET_TOP_FREQUENCIES[:k])
        else:
            if not 1 <= k <= REFERENCE_GRID**spatial_dims:
                raise ValueError(f"frequencies='{selection}': K must be in 1..{REFERENCE_GRID**spatial_dims}.")
            base = _lowest(k, spatial_dims)
        scale = [max(1, s // REFERENCE_GRID) for s in dct_size]
        chosen = [tuple(f * m for f, m in zip(freq, scale)) for freq in base]
    else:
        chosen = [tuple(int(i) for i in freq) for freq in selection]
        if len(chosen) == 0:
            raise ValueError("frequencies must not be empty.")
    for freq in chosen:
        if len(freq) != spatial_dims or any(not 0 <= f < s for f, s in zip(freq, dct_size)):
            raise ValueError(
                f"frequencies: {freq} is not a {spatial_dims}-tuple of indices inside the DCT grid "
                f"{tuple(dct_size)} (each index in 0..size-1)."
            )
    return chosen


def dct_basis(dct_size: Sequence[int], frequencies: Sequence[Sequence[int]]) -> torch.Tensor:
    """Orthonormal DCT-II basis images, one per frequency: a ``(K, *dct_size)`` float64 tensor."""
    images = []
    for freq in frequencies:
        image = torch.ones((), dtype=torch.float64)
        for u, n in zip(freq, dct_size):
            i = torch.arange(n, dtype=torch.float64)
            b = torch.cos(math.pi * u * (i + 0.5) / n) * (math.sqrt(1.0 / n) if u == 0 else math.sqrt(2.0 / n))
            image = image.unsqueeze(-1) * b
        images.append(image)
    return torch.stack(images)


class _DCTAttention(nn.Module):
    """Shared set-up: the DCT grid, the frequencies, the resize to the grid and the bias-free MLP
    ``C -> C // reduction -> C`` (ReLU between) that both papers use."""

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        dct_size: Union[int, Sequence[int]] = 7,
        frequencies: FrequencySelection = "top16",
        reduction: int = 16,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}.")
        size = ensure_tuple_rep(dct_size, spatial_dims)
        if any(s < 1 for s in size):
            raise ValueError(f"dct_size must be positive, got {dct_size}.")
        self.name = type(self).__name__
        self.spatial_dims = spatial_dims
        self.channels = channels
        self.dct_size = list(size)
        self.frequencies = dct_frequencies(frequencies, spatial_dims, size)
        self.resize = Pool[Pool.ADAPTIVEAVG, spatial_dims](tuple(size))
        if channels // reduction < 1:
            raise ValueError(f"reduction ({reduction}) must leave at least one hidden unit for {channels} channels.")
        self.mlp = nn.Sequential(
            nn.Linear(channels, channels // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels, bias=False),
        )
        self.register_buffer("basis", self._basis(), persistent=False)

    def _basis(self) -> torch.Tensor:
        """The DCT basis images the pooling multiplies by (each paper its own)."""
        raise NotImplementedError

    def _to_grid(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.channels:
            raise ValueError(
                f"{self.name} expects input (B, {self.channels}, {', '.join(['*'] * self.spatial_dims)}), "
                f"got shape {list(x.shape)}."
            )
        if list(x.shape[2:]) != self.dct_size:
            x = self.resize(x)
        return x


class MultiSpectralChannelAttention(_DCTAttention):
    """FcaNet's multi-spectral channel attention (Qin et al., ICCV 2021, Eq. 7-8).

    The ``C`` channels are split into ``K`` equal groups; channel ``c`` of group ``k`` is pooled to
    ``Freq_c = sum_i x_c(i) B_k(i)``, its DCT coefficient at frequency ``k``. Then
    ``w = sigmoid(FC2(ReLU(FC1(Freq))))`` and the output is ``x * w``.

    Args:
        spatial_dims: 2 or 3.
        channels: number of channels ``C``, divisible by the number of frequencies.
        dct_size: DCT grid size (int or per axis); inputs of another size are average-pooled to it.
            FcaNet uses 7 for 224-pixel ImageNet models (56, 28, 14, 7 by stage).
        frequencies: frequency selection, see :func:`dct_frequencies` (FcaNet's default ``"top16"``).
        reduction: the MLP's hidden width is ``C // reduction`` (FcaNet: 16).

    Raises:
        ValueError: ``channels`` not divisible by the number of frequencies, ``channels // reduction < 1``,
            or an invalid frequency selection.
    """

    def _basis(self) -> torch.Tensor:
        """One basis image per channel: frequency ``k`` for the ``k``-th of ``K`` equal channel groups."""
        k = len(self.frequencies)
        if self.channels % k != 0:
            raise ValueError(
                f"channels ({self.channels}) must be divisible by the number of frequencies ({k}): FcaNet assigns "
                "one frequency to each equal channel group."
            )
        return dct_basis(self.dct_size, self.frequencies).repeat_interleave(self.channels // k, dim=0)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled descriptor ``(B, C)``: each channel's DCT coefficient at its group's frequency."""
        grid = self._to_grid(x)
        return (grid * self.basis.to(grid.dtype)).flatten(2).sum(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.mlp(self.pool(x)))
        return x * w.reshape(list(w.shape) + [1] * self.spatial_dims)


class MultiFrequencyChannelAttention(_DCTAttention):
    """Multi-frequency channel attention (MFCA) of MADGNet (Nam et al., CVPR 2024, Fig. 1, MFMSA block).

    For each of the ``K`` frequencies, the product ``x * B_k`` (every channel with the same basis image)
    is reduced over space by average, max and min pooling; each statistic is averaged over the
    frequencies, giving three ``C``-vectors; one shared MLP (``C -> C // reduction -> C``, ReLU, no bias)
    maps each, and ``w = sigmoid(MLP(avg) + MLP(max) + MLP(min))``. The output is ``x * w``.

    Args:
        spatial_dims: 2 (the paper) or 3 (the same on volumes, with the 3D DCT).
        channels: number of channels ``C``.
        dct_size: DCT grid size (int or per axis); inputs of another size are average-pooled to it
            (enlarged when smaller, as in the official model). MADGNet picks it from the block width:
            32 -> 112, 64 -> 56, 128 -> 28, 256 -> 14, 512 -> 7.
        frequencies: frequency selection, see :func:`dct_frequencies` (MADGNet: ``"top16"``).
        reduction: the shared MLP's hidden width is ``C // reduction`` (MADGNet: 16).

    Raises:
        ValueError: ``channels // reduction < 1`` or an invalid frequency selection.
    """

    def _basis(self) -> torch.Tensor:
        """The ``K`` basis images, each applied to every channel."""
        return dct_basis(self.dct_size, self.frequencies)

    def frequency_pooling(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Average, max and min over space of ``x * B_k`` for every channel and frequency: 3 x ``(B, C, K)``."""
        grid = self._to_grid(x)
        products = (grid.unsqueeze(2) * self.basis.to(grid.dtype)).flatten(3)
        # max/min with their indices, as the official model's adaptive max pooling: the gradient goes to one
        # voxel (amax would share it among ties, at several times the cost of its backward pass)
        return products.mean(-1), products.max(-1).values, products.min(-1).values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg, high, low = self.frequency_pooling(x)
        w = torch.sigmoid(self.mlp(avg.mean(-1)) + self.mlp(high.mean(-1)) + self.mlp(low.mean(-1)))
        return x * w.reshape(list(w.shape) + [1] * self.spatial_dims)
