"""Per-case segmentation metrics: MONAI's where it has them, the rest (boundary F1, pixel accuracies, mIoU) here.

All functions take one case as one-hot ``(C, *spatial)`` arrays or tensors (channel 0 the background) and
the voxel ``spacing`` in mm, so that distances are in mm (pass ``None`` for pixel units).

Conventions, stated because papers differ (``../shared/research/architectures.md`` section 5):

- foreground metrics are per class, on the binary mask of that class;
- a class absent from both the prediction and the ground truth scores Dice, IoU, precision, recall,
  boundary F1 and surface Dice 1 and distance 0 (a correct empty prediction); absent from exactly one of
  them, overlap metrics are 0 and distances NaN (undefined), which the summary leaves out;
- ``pixel_accuracy`` is the fraction of correctly labelled pixels; ``mean_pixel_accuracy`` the mean
  over classes present in the ground truth (background included) of the per-class recall; ``miou`` the
  mean over classes present in the prediction or the ground truth (background included) of the IoU.
"""

from __future__ import annotations

import math
import warnings
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    compute_surface_dice,
    get_confusion_matrix,
)
from monai.metrics.confusion_matrix import compute_confusion_matrix_metric
from scipy import ndimage

__all__ = ["boundary_f1", "pixel_accuracies", "segmentation_metrics", "summarise"]

ArrayLike = Union[np.ndarray, torch.Tensor]


def _as_bool(mask: ArrayLike) -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    return np.asarray(mask) > 0.5


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask with a neighbour (face connectivity) outside it."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def boundary_f1(
    pred: ArrayLike, target: ArrayLike, tolerance: float = 2.0, spacing: Optional[Sequence[float]] = None
) -> float:
    """Boundary F1 (Csurka et al., "What is a good evaluation measure for semantic segmentation?", BMVC 2013).

    Precision is the fraction of the predicted boundary within ``tolerance`` of the true boundary, recall
    the fraction of the true boundary within ``tolerance`` of the predicted one; the score is their
    harmonic mean. ``tolerance`` is in mm when ``spacing`` is given, in pixels otherwise.
    """
    p, t = _as_bool(pred), _as_bool(target)
    bp, bt = _boundary(p), _boundary(t)
    if not bp.any() and not bt.any():
        return 1.0
    if not bp.any() or not bt.any():
        return 0.0
    sampling = None if spacing is None else list(spacing)
    dist_to_t = ndimage.distance_transform_edt(~bt, sampling=sampling)
    dist_to_p = ndimage.distance_transform_edt(~bp, sampling=sampling)
    precision = float((dist_to_t[bp] <= tolerance).mean())
    recall = float((dist_to_p[bt] <= tolerance).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def pixel_accuracies(pred: ArrayLike, target: ArrayLike) -> Dict[str, float]:
    """Pixel accuracy, mean pixel accuracy and mIoU over all classes (background included)."""
    p, t = _as_bool(pred), _as_bool(target)
    classes = p.shape[0]
    correct = sum(int((p[c] & t[c]).sum()) for c in range(classes))
    recalls, ious = [], []
    for c in range(classes):
        inter = int((p[c] & t[c]).sum())
        if t[c].any():
            recalls.append(inter / int(t[c].sum()))
        union = int((p[c] | t[c]).sum())
        if union:
            ious.append(inter / union)
    return {
        "pixel_accuracy": correct / t[0].size,
        "mean_pixel_accuracy": float(np.mean(recalls)),
        "miou": float(np.mean(ious)),
    }


def segmentation_metrics(
    pred: ArrayLike,
    target: ArrayLike,
    class_names: Optional[Mapping[int, str]] = None,
    spacing: Optional[Sequence[float]] = None,
    boundary_tolerance: float = 2.0,
    surface_tolerance: float = 2.0,
) -> Dict[str, float]:
    """Every metric for one case, as a flat ``{"<metric>_<class>": value}`` dict plus the all-class ones.

    Args:
        pred: one-hot prediction ``(C, *spatial)``.
        target: one-hot ground truth ``(C, *spatial)``.
        class_names: name of each foreground class index (default ``class_<i>``).
        spacing: voxel size in mm; distances and tolerances are then in mm, otherwise in pixels.
        boundary_tolerance: tolerance of the boundary F1.
        surface_tolerance: tolerance of the surface Dice (normalised surface distance).

    Returns:
        ``dice``, ``iou``, ``precision``, ``recall``, ``boundary_f1``, ``hd95``, ``asd``, ``surface_dice`` per
        foreground class, and ``pixel_accuracy``, ``mean_pixel_accuracy``, ``miou``.
    """
    p = torch.as_tensor(_as_bool(pred), dtype=torch.float32)[None]
    t = torch.as_tensor(_as_bool(target), dtype=torch.float32)[None]
    if p.shape != t.shape:
        raise ValueError(
            f"pred and target must have the same one-hot shape, got {list(p.shape[1:])} and {list(t.shape[1:])}."
        )
    classes = p.shape[1]
    names = {c: (class_names or {}).get(c, f"class_{c}") for c in range(1, classes)}
    sp = None if spacing is None else [float(s) for s in spacing]

    dice = compute_dice(p, t, include_background=False, ignore_empty=False)[0]
    iou = compute_iou(p, t, include_background=False, ignore_empty=False)[0]
    cm = get_confusion_matrix(p, t, include_background=False)
    precision = compute_confusion_matrix_metric("precision", cm)[0]
    recall = compute_confusion_matrix_metric("sensitivity", cm)[0]
    with warnings.catch_warnings():
        # MONAI warns for every empty class; the conventions above handle them
        warnings.filterwarnings("ignore", message=".*is all 0, this may result in nan/inf distance.*")
        hd95 = compute_hausdorff_distance(p, t, include_background=False, percentile=95, spacing=sp)[0]
        asd = compute_average_surface_distance(p, t, include_background=False, symmetric=True, spacing=sp)[0]
        nsd = compute_surface_dice(p, t, [surface_tolerance] * (classes - 1), include_background=False, spacing=sp)[0]

    out: Dict[str, float] = {}
    for i, c in enumerate(range(1, classes)):
        name = names[c]
        present_p, present_t = bool(p[0, c].any()), bool(t[0, c].any())
        both_empty = not present_p and not present_t
        out[f"dice_{name}"] = float(dice[i])
        out[f"iou_{name}"] = float(iou[i])
        # MONAI gives NaN for 0/0: no prediction (precision) or no ground truth (recall)
        out[f"precision_{name}"] = 1.0 if both_empty else _nan_to(float(precision[i]), 0.0)
        out[f"recall_{name}"] = 1.0 if both_empty else _nan_to(float(recall[i]), 0.0)
        out[f"boundary_f1_{name}"] = boundary_f1(p[0, c], t[0, c], boundary_tolerance, sp)
        out[f"hd95_{name}"] = 0.0 if both_empty else _finite_or_nan(float(hd95[i]))
        out[f"asd_{name}"] = 0.0 if both_empty else _finite_or_nan(float(asd[i]))
        out[f"surface_dice_{name}"] = 1.0 if both_empty else _nan_to(float(nsd[i]), 0.0)
    out.update(pixel_accuracies(p[0], t[0]))
    return out


def _nan_to(value: float, default: float) -> float:
    return default if math.isnan(value) else value


def _finite_or_nan(value: float) -> float:
    return value if math.isfinite(value) else float("nan")


def summarise(rows: List[Mapping[str, float]]) -> Dict[str, Dict[str, float]]:
    """Mean, standard deviation, median and count (NaN left out) of every metric over the cases."""
    keys = [k for k in rows[0] if k != "case"] if rows else []
    summary = {}
    for key in keys:
        values = np.array([float(r[key]) for r in rows], dtype=np.float64)
        values = values[~np.isnan(values)]
        summary[key] = {
            "mean": float(values.mean()) if values.size else float("nan"),
            "std": float(values.std()) if values.size else float("nan"),
            "median": float(np.median(values)) if values.size else float("nan"),
            "n": int(values.size),
        }
    return summary
