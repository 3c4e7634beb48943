"""FF-Parser: a learnable filter in the Fourier domain (MedSegDiff, Wu et al., MIDL 2023, Sec. 2.2, Fig. 3).

``m' = IFFT(A * FFT(m))``: the feature map is transformed over its spatial axes, multiplied element-wise by
a learnable complex weight map ``A`` (one value per channel and frequency) and transformed back. MedSegDiff
applies it to the noisy-mask features before fusing them with the image features, to damp the
high-frequency noise the diffusion adds.
"""

from __future__ import annotations

from typing import List, Sequence, Union

import torch
from monai.utils import ensure_tuple_rep
from torch import nn

__all__ = ["FFParser"]


class FFParser(nn.Module):
    """Feature frequency parser: ``x -> irfftn(A * rfftn(x))`` over the spatial axes, per channel.

    The transform is the real FFT with orthonormal scaling, so ``A`` lives on the half spectrum:
    ``(C, *spatial_size[:-1], spatial_size[-1] // 2 + 1)`` complex values, stored as a real parameter with
    a trailing (real, imaginary) axis so that every optimiser and DistributedDataParallel handle it.

    ``A`` starts at 1, where the layer is the identity; it is computed as
    ``x + irfftn((A - 1) * rfftn(x))``, which is the same linear map and is exactly the identity at
    initialisation. (The official MedSegDiff code initialises ``A`` with N(0, 0.02^2), which scales the
    features by about 0.02 at the start; lucidrains' re-implementation starts at 1, as we do.)

    The FFT runs in float32 (float64 for float64 inputs) also under autocast; the result has the input's
    dtype.

    Args:
        spatial_dims: 2 or 3.
        channels: number of channels ``C``.
        spatial_size: the spatial size of the feature map (int or per axis); ``A`` is defined on its
            frequency grid, so inputs must have exactly this size.

    Raises:
        ValueError: invalid arguments, or an input whose shape is not ``(B, C, *spatial_size)``.
    """

    def __init__(self, spatial_dims: int, channels: int, spatial_size: Union[int, Sequence[int]]) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}.")
        size = list(ensure_tuple_rep(spatial_size, spatial_dims))
        if any(s < 1 for s in size):
            raise ValueError(f"spatial_size must be positive, got {spatial_size}.")
        self.spatial_dims = spatial_dims
        self.channels = channels
        self.spatial_size: List[int] = size
        self.dims: List[int] = list(range(2, 2 + spatial_dims))
        half = size[:-1] + [size[-1] // 2 + 1]
        weight = torch.zeros([channels] + half + [2])
        weight[..., 0] = 1.0
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.channels or list(x.shape[2:]) != self.spatial_size:
            raise ValueError(
                f"FFParser expects input (B, {self.channels}, {', '.join(str(s) for s in self.spatial_size)}), "
                f"got shape {list(x.shape)}; its weight map is defined on that frequency grid."
            )
        compute = x if x.dtype == torch.float64 else x.float()
        spectrum = torch.fft.rfftn(compute, dim=self.dims, norm="ortho")
        filt = torch.view_as_complex(self.weight.to(compute.dtype)) - 1
        residual = torch.fft.irfftn(spectrum * filt, s=self.spatial_size, dim=self.dims, norm="ortho")
        return (compute + residual).to(x.dtype)
