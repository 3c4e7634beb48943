"""What a data set asks of training, planned from its cases as nnU-Net plans them (Isensee et al., Nature
Methods 18, 2021, "rule-based parameters"; nnU-Net v2's ``ExperimentPlanner``).

- :func:`target_spacing`: the median spacing; for anisotropic data (the coarsest axis more than 3 times the
  others and its extent in voxels more than 3 times smaller) the coarse axis takes the 10th percentile of its
  spacings, so that the few finely sampled cases are not thrown away;
- :func:`patch_size`: the median shape after resampling, each axis rounded up to a multiple of what the
  network needs along it, then the axis longest in millimetres shortened, one multiple at a time, until the
  patch holds at most ``max_voxels``; any shape, not forced cubic;
- :func:`unet_strides`: per-axis strides of a U-Net's levels: an axis is down-sampled only while its spacing
  is at most twice the finest one and its feature map has at least 8 voxels (nnU-Net's pooling rule), so a
  5 mm axis of a 0.7 mm CT is kept until the in-plane axes have caught up;
- :func:`augmentation`: the spatial augmentation valid for a patch: flips along every axis, 90-degree
  rotations only in planes whose two sides (and spacings) are equal, elsewhere nnU-Net's rotation (±30
  degrees, in planes of equal spacing only) and scaling (0.7 to 1.4).

Pure functions of shapes and spacings: the machine's part of the plan (batch, patches per volume, workers)
is :mod:`monai_ext.bundle.plan`.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

__all__ = [
    "target_spacing",
    "median_shape",
    "patch_size",
    "unet_strides",
    "stride_product",
    "augmentation",
    "ANISOTROPY",
    "MAX_VOXELS",
]

ANISOTROPY = 3.0  # nnU-Net's anisotropy threshold
MAX_VOXELS = {2: 256**2, 3: 128**3}  # the largest patch: nnU-Net-sized, for a GPU (a CPU plan measures and shortens it)
_MIN_FEATURE = 8  # an axis is pooled only while its feature map has at least this many voxels (4 after pooling)


def target_spacing(spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]]) -> List[float]:
    """nnU-Net's full-resolution target spacing of cases with these ``spacings`` and ``shapes`` (voxels)."""
    spacings, shapes = np.asarray(spacings, dtype=float), np.asarray(shapes, dtype=float)
    target = np.median(spacings, axis=0)
    if len(target) < 3:
        return [round(float(s), 4) for s in target]
    sizes = np.median(shapes, axis=0)
    worst = int(np.argmax(target))
    others = [i for i in range(len(target)) if i != worst]
    if target[worst] > ANISOTROPY * max(target[others]) and sizes[worst] * ANISOTROPY < min(sizes[others]):
        coarse = float(np.percentile(spacings[:, worst], 10))
        target[worst] = max(coarse, max(target[others]) + 1e-5)
    return [round(float(s), 4) for s in target]


def median_shape(
    shapes: Sequence[Sequence[int]], spacings: Sequence[Sequence[float]], target: Sequence[float]
) -> List[float]:
    """The median of the cases' shapes (voxels) once resampled from ``spacings`` to ``target``."""
    at_target = np.asarray(shapes, dtype=float) * np.asarray(spacings, dtype=float) / np.asarray(target, dtype=float)
    return [round(float(m), 1) for m in np.median(at_target, axis=0)]


def _multiples(multiple: Union[int, Sequence[int]], dims: int) -> List[int]:
    return [int(multiple)] * dims if isinstance(multiple, (int, np.integer)) else [int(m) for m in multiple]


def patch_size(
    median_shape: Sequence[float],
    multiple: Union[int, Sequence[int]],
    max_voxels: int,
    spacing: Optional[Sequence[float]] = None,
) -> List[int]:
    """The median shape (voxels, after resampling to ``spacing``) rounded up per axis to ``multiple`` (one value,
    or one per axis); then the axis longest in millimetres (nnU-Net's patches start isotropic in millimetres),
    and on a tie the one largest against that shape, is shortened by its multiple until the patch holds at
    most ``max_voxels``, no axis below its multiple."""
    steps = _multiples(multiple, len(median_shape))
    spacing = [1.0] * len(median_shape) if spacing is None else [float(s) for s in spacing]
    full = [m * max(1, math.ceil(s / m)) for s, m in zip(median_shape, steps)]
    patch = list(full)
    while math.prod(patch) > max_voxels:
        shrinkable = [i for i in range(len(patch)) if patch[i] > steps[i]]
        if not shrinkable:
            break
        axis = max(shrinkable, key=lambda i: (round(patch[i] * spacing[i], 6), patch[i] / full[i]))
        patch[axis] -= steps[axis]
    return patch


def unet_strides(spacing: Sequence[float], patch: Sequence[int], levels: int = 4) -> List[List[int]]:
    """Per-level, per-axis strides of a U-Net with ``levels`` down-samplings for ``patch`` at ``spacing``
    (nnU-Net's rule, see the module docstring). An axis that cannot be pooled at a level gets stride 1."""
    current = [float(s) for s in spacing]
    sizes = [int(p) for p in patch]
    strides = []
    for _ in range(levels):
        poolable = [i for i in range(len(sizes)) if sizes[i] >= _MIN_FEATURE]
        finest = min(current[i] for i in poolable) if poolable else 0.0
        level = [2 if current[i] <= 2 * finest and sizes[i] >= _MIN_FEATURE else 1 for i in range(len(sizes))]
        strides.append(level)
        current = [c * s for c, s in zip(current, level)]
        sizes = [z // s for z, s in zip(sizes, level)]
    return strides


def stride_product(strides: Sequence[Union[int, Sequence[int]]], spatial_dims: int) -> List[int]:
    """What a U-Net with these ``strides`` (one per level: a number, or one per axis) needs each patch axis to
    be a multiple of."""
    out = [1] * spatial_dims
    for level in strides:
        for i, s in enumerate(_multiples(level, spatial_dims)):
            out[i] *= s
    return out


def augmentation(
    patch: Sequence[int],
    spacing: Optional[Sequence[float]] = None,
    rotate_degrees: float = 30.0,
    scale: Sequence[float] = (0.7, 1.4),
    prob: float = 0.2,
) -> Dict[str, object]:
    """The spatial augmentation valid for ``patch`` (see the module docstring): ``{"flip_axes", "rotate90_planes",
    "rotate_planes", "rotate_degrees", "scale", "prob"}``; a plane is a pair of axes."""
    dims = len(patch)
    spacing = [1.0] * dims if spacing is None else [float(s) for s in spacing]
    planes = [(i, j) for i in range(dims) for j in range(i + 1, dims)]
    same_spacing = {p: math.isclose(spacing[p[0]], spacing[p[1]], rel_tol=0.05) for p in planes}
    square = [list(p) for p in planes if patch[p[0]] == patch[p[1]] and same_spacing[p]]
    rotate = [list(p) for p in planes if list(p) not in square and same_spacing[p]]
    return {
        "flip_axes": list(range(dims)),
        "rotate90_planes": square,
        "rotate_planes": rotate,
        "rotate_degrees": rotate_degrees if rotate else 0.0,
        "scale": [float(s) for s in scale],
        "prob": prob,
    }
