"""Discrete wavelet transform (DWT) and its inverse for 1D, 2D and 3D tensors.

The transform is the separable multi-level DWT of PyWavelets (``pywt.wavedecn`` / ``pywt.waverecn``),
written with strided convolutions so that it runs batched on CPU and CUDA, under autocast and with
gradients. Coefficients equal PyWavelets' for every discrete wavelet it knows and for the boundary
modes ``zero``, ``symmetric``, ``reflect``, ``periodic`` and ``periodization``.

Subband naming: one letter per spatial axis, in axis order ((H, W) in 2D, (D, H, W) in 3D); ``L`` is the
low-pass (approximation) filter along that axis and ``H`` the high-pass (detail) filter. In 2D the four
subbands are ``LL, LH, HL, HH``; in 3D the eight are ``LLL, LLH, LHL, LHH, HLL, HLH, HHL, HHH``. This is the
order of PyWavelets' ``dwtn`` keys with ``a -> L`` and ``d -> H`` (``LH`` is ``'ad'``, i.e. ``pywt.dwt2``'s
vertical detail ``cV``; ``HL`` is ``'da'``, its horizontal detail ``cH``).
"""

from __future__ import annotations

import itertools
from typing import List, Optional, Tuple

import pywt
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DWT", "IDWT", "SUPPORTED_MODES", "subband_names", "discrete_wavelets"]

SUPPORTED_MODES = ("zero", "symmetric", "reflect", "periodic", "periodization")


def discrete_wavelets() -> List[str]:
    """Names of every discrete wavelet PyWavelets knows (haar, db*, sym*, coif*, bior*, rbio*, dmey)."""
    return pywt.wavelist(kind="discrete")


def subband_names(spatial_dims: int) -> List[str]:
    """Names of the ``2**spatial_dims`` subbands of one level, in the order the transforms use.

    The first name is the approximation (``LL`` in 2D); the rest are the details that :class:`DWT`
    stacks along dimension 2.
    """
    return ["".join(p) for p in itertools.product("LH", repeat=spatial_dims)]


def _validate(spatial_dims: int, wavelet: str, mode: str) -> pywt.Wavelet:
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
    if mode not in SUPPORTED_MODES:
        raise ValueError(f"mode must be one of {SUPPORTED_MODES}, got {mode!r}.")
    if wavelet not in discrete_wavelets():
        families = ", ".join(f"{f}*" for f in pywt.families(short=True) if pywt.wavelist(f, kind="discrete"))
        raise ValueError(
            f"wavelet must name a discrete wavelet known to PyWavelets ({families}), got {wavelet!r}; "
            "see monai_ext.networks.blocks.dwt.discrete_wavelets()."
        )
    return pywt.Wavelet(wavelet)


def _extension_index(n: int, left: int, right: int, mode: str, device: torch.device) -> torch.Tensor:
    """Indices into ``[0, n)`` of a signal of length ``n`` extended by ``left``/``right`` samples.

    ``symmetric`` repeats the edge sample (half-sample symmetry), ``reflect`` does not (whole-sample
    symmetry), ``periodic`` wraps around; all three repeat periodically when the extension is longer
    than the signal, as PyWavelets does.
    """
    idx = torch.arange(-left, n + right, device=device)
    if mode == "periodic":
        return torch.remainder(idx, n)
    if mode == "symmetric":
        m = torch.remainder(idx, 2 * n)
        return torch.where(m < n, m, 2 * n - 1 - m)
    # reflect
    period = 2 * n - 2
    m = torch.remainder(idx, period)
    return torch.where(m < n, m, period - m)


def _conv(
    x: torch.Tensor, weight: torch.Tensor, stride: List[int], padding: List[int], groups: int, transposed: bool = False
) -> torch.Tensor:
    """A 1D, 2D or 3D (transposed) convolution, spelled out per dimension: TorchScript cannot pick a function at
    run time, and ``torch.convolution``, which could, is not on autocast's lists."""
    nd = x.dim() - 2
    if transposed:
        if nd == 1:
            return F.conv_transpose1d(x, weight, stride=stride, padding=padding, groups=groups)
        if nd == 2:
            return F.conv_transpose2d(x, weight, stride=stride, padding=padding, groups=groups)
        return F.conv_transpose3d(x, weight, stride=stride, padding=padding, groups=groups)
    if nd == 1:
        return F.conv1d(x, weight, stride=stride, padding=padding, groups=groups)
    if nd == 2:
        return F.conv2d(x, weight, stride=stride, padding=padding, groups=groups)
    return F.conv3d(x, weight, stride=stride, padding=padding, groups=groups)


def _axis_kernel(filters: torch.Tensor, axis: int, nd: int, groups: int) -> torch.Tensor:
    """The (2, F) filter pair as a depthwise kernel (2 * groups, 1, ..., F, ...) along spatial ``axis``."""
    shape = [2, 1] + [1] * nd
    shape[axis + 2] = filters.shape[1]
    return filters.reshape(shape).repeat([groups] + [1] * (nd + 1))


def _product_kernel(filters: torch.Tensor, nd: int) -> torch.Tensor:
    """All ``2**nd`` outer products of the filter pair, (2**nd, 1, F, ..., F), in subband order."""
    kernel = filters
    flen = filters.shape[1]
    for axis in range(1, nd):
        # new[2 k + j, ..., t] = kernel[k, ...] * filters[j, t]
        k = kernel.reshape([kernel.shape[0], 1] + list(kernel.shape[1:]) + [1])
        f = filters.reshape([1, 2] + [1] * axis + [flen])
        kernel = (k * f).reshape([kernel.shape[0] * 2] + [flen] * (axis + 1))
    return kernel.unsqueeze(1)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """Channels-last layout for the depthwise convolutions of the separable path on the CPU.

    oneDNN's depthwise kernels vectorise over channels in that layout: 1.2-1.5x faster there for db4
    in 2D and 3D (benchmarks/bench_layers.py). On CUDA the layout is left as it comes.
    """
    if x.device.type != "cpu":
        return x
    if x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if x.dim() == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x


def _extend(x: torch.Tensor, dim: int, flen: int, mode: str) -> Tuple[torch.Tensor, int]:
    """Extend axis ``dim`` for the analysis; returns the tensor and the zero padding left to the convolution.

    After the extension, output sample ``k`` is ``sum_t h[F - 1 - t] x_ext[2k + t]``: PyWavelets'
    ``sum_j h[j] x[2k + 1 - j]`` over the signal extended by ``F - 2`` samples on the left
    (``floor((N + F - 1) / 2)`` samples), or for ``periodization`` over the signal made even by repeating
    its last sample and wrapped around by ``F/2 - 1`` on each side (``ceil(N / 2)`` samples).
    """
    n = x.shape[dim]
    if mode == "periodization":
        if n % 2 == 1:
            x = torch.cat([x, x.narrow(dim, n - 1, 1)], dim)
            n += 1
        half = flen // 2 - 1
        if half > 0:
            x = x.index_select(dim, torch.remainder(torch.arange(-half, n + half, device=x.device), n))
        return x, 0
    m = (n + flen - 1) // 2
    left = flen - 2
    right = 2 * (m - 1) + flen - left - n
    if mode == "zero" and left == right:
        return x, left  # even n: the convolution pads both sides with zeros itself
    if mode == "zero":
        pad = [0] * (2 * (x.dim() - 2))
        pos = 2 * (x.dim() - 1 - dim)
        pad[pos] = left
        pad[pos + 1] = right
        return F.pad(x, pad), 0
    if left > 0 or right > 0:
        x = x.index_select(dim, _extension_index(n, left, right, mode, x.device))
    return x, 0


def _extend_coefficients(c: torch.Tensor, dim: int, flen: int, mode: str) -> Tuple[torch.Tensor, int]:
    """Prepare axis ``dim`` of the coefficients for the synthesis; returns them and the output crop.

    The upsampled coefficients convolved with the reconstruction filters keep their ``2M - F + 2``
    central samples (PyWavelets' ``idwt``): a crop of ``F - 2`` on each side. For ``periodization`` the
    coefficients are extended circularly by ``floor(F / 4)`` so that the ``2M`` kept samples include the
    wrapped-around terms.
    """
    if mode != "periodization":
        return c, flen - 2
    m = c.shape[dim]
    ext = flen // 4
    if ext > 0:
        c = c.index_select(dim, torch.remainder(torch.arange(-ext, m + ext, device=c.device), m))
    return c, flen // 2 - 1 + 2 * ext


def _use_product_kernel(flen: int, nd: int) -> bool:
    # One convolution with the 2**nd outer-product kernels costs F**nd multiply-adds per input sample,
    # nd separable passes cost 2 F: for Haar (F = 2) the single pass wins (2x on CPU), for longer
    # filters the separable passes do.
    return flen == 2 or nd == 1


class DWT(nn.Module):
    """Multi-level separable discrete wavelet transform, equal to ``pywt.wavedecn``.

    Example::

        dwt = DWT(spatial_dims=2, wavelet="db2", levels=2, mode="symmetric")
        approx, details = dwt(torch.randn(4, 3, 64, 64))
        # approx: (4, 3, 17, 17) = LL of level 2
        # details[0]: (4, 3, 3, 17, 17) = LH, HL, HH of level 2 (the coarsest)
        # details[1]: (4, 3, 3, 33, 33) = LH, HL, HH of level 1

    Args:
        spatial_dims: number of spatial dimensions of the input (1, 2 or 3).
        wavelet: name of a discrete PyWavelets wavelet: ``haar``, ``db1``..``db38``, ``sym2``..``sym20``,
            ``coif1``..``coif17``, ``bior*``, ``rbio*``, ``dmey``.
        levels: number of decomposition levels ``J >= 1``.
        mode: signal extension at the borders, as PyWavelets names it: ``zero``, ``symmetric``,
            ``reflect``, ``periodic`` or ``periodization`` (the only mode that halves sizes exactly).

    Returns:
        ``(approx, details)``: the level-``J`` approximation ``(B, C, *spatial_J)`` and a list of ``J``
        detail tensors ``(B, C, 2**spatial_dims - 1, *spatial_j)`` from the coarsest level to the finest
        (the order of ``pywt.wavedecn``), the subbands in the order of :func:`subband_names` without the
        first.

    Raises:
        ValueError: unknown ``wavelet`` or ``mode``, ``levels < 1``, an input with other than
            ``spatial_dims + 2`` dimensions, or spatial sizes too small for ``levels`` (a size below 2, or
            more than one level and more than ``pywt.dwt_max_level`` allows for the smallest size).
    """

    def __init__(self, spatial_dims: int, wavelet: str = "haar", levels: int = 1, mode: str = "zero") -> None:
        super().__init__()
        w = _validate(spatial_dims, wavelet, mode)
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}.")
        self.spatial_dims = spatial_dims
        self.wavelet = wavelet
        self.levels = levels
        self.mode = mode
        self.filter_length = w.dec_len
        self.product_kernel = _use_product_kernel(w.dec_len, spatial_dims)
        # time-reversed: convolution layers compute cross-correlations
        filters = torch.tensor([w.dec_lo[::-1], w.dec_hi[::-1]], dtype=torch.float64)
        self.register_buffer("filters", filters, persistent=False)
        self.register_buffer("kernel", _product_kernel(filters, spatial_dims), persistent=False)

    def max_levels(self, size: List[int]) -> int:
        """Largest number of levels for spatial ``size``.

        ``pywt.dwt_max_level`` of the smallest axis (beyond it every coefficient depends on the border
        extension), but at least one level when every size is at least 2.
        """
        smallest = min(size)
        if smallest < 2:
            return 0
        # floor(log2(smallest / (F - 1))) in integers
        level = 0
        while (self.filter_length - 1) << (level + 1) <= smallest:
            level += 1
        return max(1, level)

    def _level(self, x: torch.Tensor) -> torch.Tensor:
        """One level: (B, C, *spatial) -> (B, C * 2**nd, *spatial / 2), subbands of a channel adjacent."""
        nd = self.spatial_dims
        padding: List[int] = []
        for axis in range(nd):
            x, pad = _extend(x, axis + 2, self.filter_length, self.mode)
            padding.append(pad)
        if self.product_kernel:
            groups = x.shape[1]
            weight = self.kernel.to(x.dtype).repeat([groups] + [1] * (nd + 1))
            return _conv(x, weight, [2] * nd, padding, groups)
        filters = self.filters.to(x.dtype)
        x = _channels_last(x)
        for axis in range(nd):
            groups = x.shape[1]
            stride = [1] * nd
            stride[axis] = 2
            pad = [0] * nd
            pad[axis] = padding[axis]
            x = _conv(x, _axis_kernel(filters, axis, nd, groups), stride, pad, groups)
        return x

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        nd = self.spatial_dims
        if x.dim() != nd + 2:
            raise ValueError(
                f"DWT input must have {nd + 2} dimensions (batch, channel and {nd} spatial) for "
                f"spatial_dims={nd}, got shape {list(x.shape)}."
            )
        size = list(x.shape[2:])
        allowed = self.max_levels(size)
        if self.levels > allowed:
            raise ValueError(
                f"levels={self.levels} is too many for spatial size {size} with wavelet '{self.wavelet}' "
                f"(filter length {self.filter_length}): at most {allowed} (pywt.dwt_max_level; every size must be >= 2)."
            )
        batch, channels = x.shape[0], x.shape[1]
        details: List[torch.Tensor] = []
        approx = x
        for _ in range(self.levels):
            y = self._level(approx)
            y = y.reshape([batch, channels, 1 << nd] + list(y.shape[2:]))
            # split, not indexing: its backward is one concatenation instead of zero-filled copies
            parts = torch.split(y, [1, (1 << nd) - 1], dim=2)
            approx = parts[0].squeeze(2)
            details.insert(0, parts[1])
        return approx, details


class IDWT(nn.Module):
    """Inverse of :class:`DWT`, equal to ``pywt.waverecn``.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        wavelet: the wavelet used for the decomposition.
        mode: the boundary mode used for the decomposition.

    ``forward(approx, details, output_size=None)`` takes what :class:`DWT` returns. Between levels the
    reconstruction is cut to the next detail's size (as ``pywt.waverecn`` does); ``output_size`` gives
    the final spatial size, needed to recover odd sizes exactly (the transform of a size-``N`` signal has
    the same size for ``N = 2k`` and ``N = 2k - 1``). Without it the full reconstruction is returned.

    Raises:
        ValueError: unknown ``wavelet`` or ``mode``; coefficients whose dimensions or sizes do not fit
            together; an ``output_size`` larger than the reconstruction.
    """

    def __init__(self, spatial_dims: int, wavelet: str = "haar", mode: str = "zero") -> None:
        super().__init__()
        w = _validate(spatial_dims, wavelet, mode)
        self.spatial_dims = spatial_dims
        self.wavelet = wavelet
        self.mode = mode
        self.filter_length = w.rec_len
        self.product_kernel = _use_product_kernel(w.rec_len, spatial_dims)
        filters = torch.tensor([w.rec_lo, w.rec_hi], dtype=torch.float64)
        self.register_buffer("filters", filters, persistent=False)
        self.register_buffer("kernel", _product_kernel(filters, spatial_dims), persistent=False)

    def _level(self, c: torch.Tensor, target: List[int]) -> torch.Tensor:
        """One level: (B, C * 2**nd, *spatial) -> (B, C, *spatial * 2), cut to ``target`` where smaller."""
        nd = self.spatial_dims
        crop: List[int] = []
        for axis in range(nd):
            c, cut = _extend_coefficients(c, axis + 2, self.filter_length, self.mode)
            crop.append(cut)
        if self.product_kernel:
            groups = c.shape[1] >> nd
            weight = self.kernel.to(c.dtype).repeat([groups] + [1] * (nd + 1))
            y = _conv(c, weight, [2] * nd, crop, groups, transposed=True)
        else:
            # undo the axes in reverse order: the last axis was filtered last
            filters = self.filters.to(c.dtype)
            y = _channels_last(c)
            for axis in range(nd - 1, -1, -1):
                groups = y.shape[1] // 2
                stride = [1] * nd
                stride[axis] = 2
                pad = [0] * nd
                pad[axis] = crop[axis]
                y = _conv(y, _axis_kernel(filters, axis, nd, groups), stride, pad, groups, transposed=True)
        for axis in range(nd):
            if target[axis] < y.shape[axis + 2]:
                y = y.narrow(axis + 2, 0, target[axis])
        return y

    def forward(
        self, approx: torch.Tensor, details: List[torch.Tensor], output_size: Optional[List[int]] = None
    ) -> torch.Tensor:
        nd = self.spatial_dims
        if approx.dim() != nd + 2:
            raise ValueError(
                f"IDWT approx must have {nd + 2} dimensions for spatial_dims={nd}, got shape {list(approx.shape)}."
            )
        if len(details) == 0:
            raise ValueError("IDWT details must hold at least one level of detail coefficients.")
        batch, channels = approx.shape[0], approx.shape[1]
        x = approx
        for level in range(len(details)):
            d = details[level]
            expected = [batch, channels, (1 << nd) - 1]
            if d.dim() != nd + 3 or list(d.shape[:3]) != expected:
                raise ValueError(
                    f"IDWT details[{level}] must have shape {expected} + {nd} spatial sizes, got {list(d.shape)}."
                )
            dsize = list(d.shape[3:])
            for axis in range(nd):
                if x.shape[axis + 2] < dsize[axis] or x.shape[axis + 2] > dsize[axis] + 1:
                    raise ValueError(
                        f"IDWT coefficient sizes do not fit: approximation {list(x.shape[2:])} against "
                        f"details[{level}] {dsize}; pass the coefficients in the order DWT returns them."
                    )
            # the reconstruction of a level may be one sample longer than the next level's coefficients
            y = torch.cat([_crop(x, dsize).unsqueeze(2), d], 2).reshape([batch, channels << nd] + dsize)
            target = [1 << 30] * nd
            if level + 1 == len(details) and output_size is not None:
                target = list(output_size)
            x = self._level(y, target)
        if output_size is not None and list(x.shape[2:]) != list(output_size):
            raise ValueError(
                f"IDWT output_size {list(output_size)} is larger than the reconstruction {list(x.shape[2:])}."
            )
        return x


def _crop(x: torch.Tensor, size: List[int]) -> torch.Tensor:
    for axis, s in enumerate(size):
        x = x.narrow(axis + 2, 0, s)
    return x
