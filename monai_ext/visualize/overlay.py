"""PNG overlays of a segmentation on its image: ground-truth outlines in green, predicted outlines in red."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from scipy import ndimage

__all__ = ["overlay_png"]

GROUND_TRUTH_RGB = (40, 220, 40)
PREDICTION_RGB = (240, 40, 40)


def _numpy(x: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _outline(labels: np.ndarray) -> np.ndarray:
    """Pixels whose label differs from a face neighbour's and that are not background."""
    edge = np.zeros(labels.shape, dtype=bool)
    for axis in range(labels.ndim):
        diff = np.diff(labels, axis=axis) != 0
        before = [slice(None)] * labels.ndim
        after = [slice(None)] * labels.ndim
        before[axis] = slice(0, -1)
        after[axis] = slice(1, None)
        edge[tuple(before)] |= diff
        edge[tuple(after)] |= diff
    return edge & ndimage.binary_dilation(labels > 0)


def overlay_png(
    image: Union[np.ndarray, torch.Tensor],
    pred: Union[np.ndarray, torch.Tensor],
    label: Optional[Union[np.ndarray, torch.Tensor]],
    path: Union[str, Path],
) -> Path:
    """Write an RGB PNG of ``image`` with the outlines of ``pred`` (red) and ``label`` (green).

    Args:
        image: ``(C, *spatial)``; one channel is shown in grey (1st-99th percentile window), three as RGB.
        pred: label map ``(*spatial)`` (class indices).
        label: ground-truth label map ``(*spatial)`` or ``None``.
        path: the PNG to write; written under a temporary name, then renamed.

    3D inputs are shown at the middle slice of the last axis. Arrays are indexed (x, y) as MONAI loads
    them, so they are transposed for display (rows = y).
    """
    from PIL import Image

    img, seg = _numpy(image).astype(np.float32), _numpy(pred).astype(np.int64)
    gt = None if label is None else _numpy(label).astype(np.int64)
    if seg.ndim == 3:
        mid = seg.shape[-1] // 2
        img, seg = img[..., mid], seg[..., mid]
        gt = None if gt is None else gt[..., mid]
    channels = img[:3] if img.shape[0] >= 3 else img[:1].repeat(3, axis=0)
    lo, hi = np.percentile(channels, [1, 99])
    rgb = np.clip((channels - lo) / max(hi - lo, 1e-8) * 255.0, 0, 255).astype(np.uint8)
    rgb = np.ascontiguousarray(np.moveaxis(rgb, 0, -1).transpose(1, 0, 2))
    if gt is not None:
        rgb[_outline(gt).T] = GROUND_TRUTH_RGB
    rgb[_outline(seg).T] = PREDICTION_RGB
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(rgb).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
