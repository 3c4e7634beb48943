"""PNG overlays of a segmentation on its image, readable without magnifying: the prediction filled in one
colour per class, the ground truth as contours of the same colours, a legend, several slices of a volume."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch

from monai_ext.atomic import write_atomically

__all__ = ["overlay_png", "class_colours"]

# matplotlib's "tab10" without its grey and without red/green next to each other
_PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (188, 189, 34),
    (23, 190, 207),
)


def class_colours(count: int) -> np.ndarray:
    """RGB in [0, 1] for classes 1..``count`` (background has none)."""
    return np.array([_PALETTE[i % len(_PALETTE)] for i in range(count)], dtype=np.float32) / 255.0


def _numpy(x: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _slices(pred: np.ndarray, label: Optional[np.ndarray], count: int) -> Sequence[int]:
    """``count`` slices of the last axis spread over the extent of the foreground (of both maps), or the volume."""
    foreground = pred > 0 if label is None else (pred > 0) | (label > 0)
    hit = np.flatnonzero(foreground.reshape(-1, foreground.shape[-1]).any(0))
    lo, hi = (hit[0], hit[-1]) if hit.size else (0, foreground.shape[-1] - 1)
    return sorted({int(round(v)) for v in np.linspace(lo, hi, count + 2)[1:-1]}) or [foreground.shape[-1] // 2]


def overlay_png(
    image: Union[np.ndarray, torch.Tensor],
    pred: Union[np.ndarray, torch.Tensor],
    label: Optional[Union[np.ndarray, torch.Tensor]],
    path: Union[str, Path],
    class_names: Optional[Mapping[int, str]] = None,
    slices: int = 4,
    title: Optional[str] = None,
    long_side: int = 1024,
) -> Path:
    """Write a PNG of ``image`` with ``pred`` filled in one colour per class (semi-transparent) and ``label`` drawn as
    contours of the same colours, with a legend naming the classes.

    Args:
        image: ``(C, *spatial)``; one channel is shown in grey (1st-99th percentile window), three as RGB.
        pred: label map ``(*spatial)`` (class indices).
        label: ground-truth label map ``(*spatial)``, or ``None``.
        path: the PNG to write; written under a temporary name, then renamed.
        class_names: names by class index (default ``class 1``, ``class 2``...; 0 is background).
        slices: for a volume, how many slices of the last axis, spread over the foreground, in a grid.
        title: a line above the picture.
        long_side: the picture's longer side in pixels (at least 512).

    Arrays are indexed (x, y[, z]) as MONAI loads them; each slice is shown with rows = y.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    img, seg = _numpy(image).astype(np.float32), _numpy(pred).astype(np.int64)
    gt = None if label is None else _numpy(label).astype(np.int64)
    classes = int(max(seg.max(initial=0), 0 if gt is None else gt.max(initial=0), max(class_names or {0: None})))
    names = {c: (class_names or {}).get(c, f"class {c}") for c in range(1, classes + 1)}
    colours = class_colours(max(classes, 1))
    picks = _slices(seg, gt, slices) if seg.ndim == 3 else [None]
    cols = int(np.ceil(np.sqrt(len(picks))))
    rows = int(np.ceil(len(picks) / cols))
    channels = img[:3] if img.shape[0] >= 3 else img[:1]
    lo, hi = np.percentile(channels, [1, 99])
    height, width = seg.shape[1], seg.shape[0]
    aspect = (rows * height) / (cols * width)
    size_in = max(long_side, 512) / 100.0
    fig_w, fig_h = (size_in, size_in * aspect) if aspect <= 1 else (size_in / aspect, size_in)
    fig, axes = plt.subplots(rows, cols, figsize=(fig_w, fig_h + 0.6), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, z in zip(axes.flat, picks):
        take = (lambda a: a) if z is None else (lambda a: a[..., z])
        shown = np.clip((take(channels) - lo) / max(hi - lo, 1e-8), 0, 1)
        shown = np.moveaxis(shown, 0, -1).transpose(1, 0, 2)
        ax.imshow(shown[..., 0] if shown.shape[-1] == 1 else shown, cmap="gray", interpolation="nearest")
        s = take(seg).T
        fill = np.zeros(s.shape + (4,), dtype=np.float32)
        for c in range(1, classes + 1):
            fill[s == c] = (*colours[c - 1], 0.45)
        ax.imshow(fill, interpolation="nearest")
        if gt is not None:
            g = take(gt).T
            for c in range(1, classes + 1):
                if (g == c).any():
                    ax.contour(g == c, levels=[0.5], colors=[colours[c - 1]], linewidths=1.5)
        if z is not None:
            ax.set_title(f"slice {z}", fontsize=9)
    handles = [Patch(facecolor=(*colours[c - 1], 0.6), label=f"{names[c]} (prediction)") for c in range(1, classes + 1)]
    if gt is not None:
        handles.append(Line2D([0], [0], color="black", linewidth=1.5, label="ground truth (outline, class colour)"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=9, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97 if title else 1))
    try:
        return write_atomically(Path(path), lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)
