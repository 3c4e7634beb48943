"""Spatial augmentation that suits the patch it is given: no transform changes a patch's shape, so a batch of
non-cubic patches always stacks (MONAI's ``RandRotate90d`` in every plane turns a 96x128x96 patch into
128x96x96 and the batch cannot be collated)."""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

from monai.config import KeysCollection
from monai.transforms import Compose, RandAffined, RandFlipd, RandRotate90d

from monai_ext.data.plan import augmentation

__all__ = ["SpatialAugmentd"]


class SpatialAugmentd(Compose):
    """Flips along every axis, 90-degree rotations in the planes whose sides are equal, and nnU-Net's
    rotation and scaling elsewhere (:func:`monai_ext.data.plan.augmentation` decides from ``patch_size``;
    ``plan`` gives that decision explicitly, as ``prepare folder`` writes it into the overlay).

    Args:
        keys: image and label keys.
        patch_size: the patch the transform will see (every transform keeps it).
        plan: ``augmentation(patch_size, spacing)``'s dictionary; default: computed from ``patch_size``.
        mode: interpolation per key for rotation and scaling; default ``"bilinear"`` for the first key (the image),
            ``"nearest"`` for the others (label maps).
        flip_prob: probability of each flip.
        rotate90_prob: probability of a 90-degree rotation (by 1 to 3 quarter turns) in each square plane.
    """

    def __init__(
        self,
        keys: KeysCollection,
        patch_size: Sequence[int],
        plan: Optional[dict] = None,
        mode: Union[str, Sequence[str], None] = None,
        flip_prob: float = 0.5,
        rotate90_prob: float = 0.5,
    ) -> None:
        keys = [keys] if isinstance(keys, str) else list(keys)
        mode = mode or ["bilinear"] + ["nearest"] * (len(keys) - 1)
        plan = dict(plan or augmentation(patch_size))
        dims = len(patch_size)
        # a patch size overridden after planning: a quarter turn in a plane whose sides now differ becomes a rotation
        uneven = [p for p in plan["rotate90_planes"] if patch_size[p[0]] != patch_size[p[1]]]
        if uneven:
            plan["rotate90_planes"] = [p for p in plan["rotate90_planes"] if p not in uneven]
            plan["rotate_planes"] = [*plan["rotate_planes"], *uneven]
            plan["rotate_degrees"] = plan["rotate_degrees"] or 30.0
        transforms = [RandFlipd(keys, prob=flip_prob, spatial_axis=axis) for axis in plan["flip_axes"]]
        transforms += [
            RandRotate90d(keys, prob=rotate90_prob, max_k=3, spatial_axes=tuple(p)) for p in plan["rotate90_planes"]
        ]
        radians = math.radians(float(plan["rotate_degrees"]))
        if dims == 2:
            rotate_range = [radians if plan["rotate_planes"] else 0.0]
        else:  # MONAI's 3D angles turn about axes 0, 1, 2: in the planes (1, 2), (0, 2), (0, 1)
            rotate_range = [
                radians if sorted({0, 1, 2} - {axis}) in plan["rotate_planes"] else 0.0 for axis in range(3)
            ]
        low, high = plan["scale"]
        transforms.append(
            RandAffined(
                keys,
                prob=float(plan["prob"]),
                rotate_range=rotate_range,
                scale_range=[(low - 1.0, high - 1.0)] * dims,
                mode=mode,
                padding_mode="zeros",
            )
        )
        super().__init__(transforms)
        self.plan = plan
