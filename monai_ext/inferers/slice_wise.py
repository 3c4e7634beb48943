"""2D networks on 3D volumes: slice-wise (and 2.5D) inference with many slices per network call."""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer

from monai_ext.inferers.streaming import StreamingSlidingWindowInferer

__all__ = ["SliceWiseInferer"]


class SliceWiseInferer(Inferer):
    """Segment a volume ``(B, C, X, Y, Z)`` with a 2D network, slice by slice along ``spatial_axis``.

    Every slice becomes one image of a batch, so :class:`StreamingSlidingWindowInferer` can put windows of many
    slices into each network call (``sw_batch_size``), unlike MONAI's ``SliceInferer``, which runs one
    slice at a time. Without context this is what :class:`StreamingSlidingWindowInferer` does itself for a 2D
    window on a volume; this class adds the context. With ``context = k`` each slice is given its ``k`` neighbours on either side as extra
    channels (2.5D; slices past the volume's ends repeat the edge slice), so the network must take
    ``C * (2k + 1)`` channels, ordered slice-major (all channels of slice ``z - k`` first).

    Args:
        spatial_axis: the axis to slice along (0, 1 or 2 of ``X, Y, Z``; 2 = axial for RAS volumes).
        context: neighbouring slices on each side given as channels (0: plain 2D).
        roi_size: in-plane window; ``None`` or values <= 0 use the whole slice.
        sw_batch_size: windows (slices) per network call.
        **kwargs: the other :class:`StreamingSlidingWindowInferer` arguments (``overlap``, ``mode``, ``sw_device``,
            ``device``, ``amp_dtype``, ``output``, ``activation``, ``tta_axes`` in the slice's two axes, ...).

    Returns:
        ``(B, C_out, X, Y, Z)`` in the representation ``output`` asks for.
    """

    def __init__(
        self,
        spatial_axis: int = 2,
        context: int = 0,
        roi_size: Union[Sequence[int], int, None] = None,
        sw_batch_size: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if spatial_axis not in (0, 1, 2):
            raise ValueError(f"spatial_axis must be 0, 1 or 2, got {spatial_axis}.")
        if context < 0:
            raise ValueError(f"context must be >= 0, got {context}.")
        self.spatial_axis = spatial_axis
        self.context = context
        self.inferer = StreamingSlidingWindowInferer(roi_size if roi_size is not None else -1, sw_batch_size, **kwargs)

    def slices(self, volume: torch.Tensor) -> torch.Tensor:
        """The batch of (2.5D) slices: ``(B * S, C * (2k + 1), H, W)`` for ``S`` slices along the axis."""
        b, c = volume.shape[:2]
        moved = volume.movedim(self.spatial_axis + 2, 1)  # (B, S, C, H, W)
        s = moved.shape[1]
        if self.context:
            padded = F.pad(moved.reshape(b, s, -1).transpose(1, 2), (self.context, self.context), mode="replicate")
            padded = padded.transpose(1, 2).reshape((b, s + 2 * self.context) + moved.shape[2:])
            moved = torch.cat([padded[:, i : i + s] for i in range(2 * self.context + 1)], dim=2)
        return moved.reshape((b * s,) + moved.shape[2:])

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        if inputs.dim() != 5:
            raise ValueError(f"SliceWiseInferer expects a volume (B, C, X, Y, Z), got shape {list(inputs.shape)}.")
        meta = inputs if isinstance(inputs, MetaTensor) else None
        volume = inputs.as_tensor() if meta is not None else inputs
        b, s = volume.shape[0], volume.shape[self.spatial_axis + 2]
        out = self.inferer(self.slices(volume), network, *args, **kwargs)  # (B * S, C_out, H, W)
        out = out.reshape((b, s) + tuple(out.shape[1:])).movedim(1, self.spatial_axis + 2)
        if meta is not None:
            out = MetaTensor(out, meta=meta.meta)
        return out
