"""A training case whose image and label do not lie on the same grid is an error, not a silent crop."""

from __future__ import annotations

from typing import Dict, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform

from monai_ext.errors import InputError

__all__ = ["CheckSameGeometryd"]


def _name(image) -> str:
    if isinstance(image, MetaTensor):
        return str(image.meta.get("filename_or_obj", "a case"))
    return "a case"


def _spatial(affine, dims: int) -> np.ndarray:
    """The affine restricted to the image's spatial axes (readers give 2D images 3x3 or 4x4 affines)."""
    a = np.asarray(affine, dtype=float)
    out = np.eye(dims + 1)
    out[:dims, :dims] = a[:dims, :dims]
    out[:dims, dims] = a[:dims, -1]
    return out


class CheckSameGeometryd(MapTransform):
    """Check that every key has the first key's spatial shape and (for ``MetaTensor``) affine.

    Put it right after loading, as nnU-Net's dataset integrity check does before training: a label
    one slice short, or resampled differently from its image, would otherwise be cropped or padded
    into a wrong training pair without a word.

    Args:
        keys: the image key first, then the keys that must match it (e.g. ``["image", "label"]``).
        atol: tolerance on affine entries (mm).

    Raises:
        InputError: one line naming the file, the key and the shapes or affines that differ.
    """

    def __init__(self, keys: Sequence[str], atol: float = 1e-3, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.atol = atol

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> Dict[Hashable, torch.Tensor]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if len(keys) < 2:
            return d
        ref = d[keys[0]]
        for key in keys[1:]:
            other = d[key]
            if tuple(other.shape[1:]) != tuple(ref.shape[1:]):
                raise InputError(
                    f"{_name(other)}: {key} shape {list(other.shape[1:])} differs from {keys[0]} shape "
                    f"{list(ref.shape[1:])} ({_name(ref)})"
                )
            if isinstance(ref, MetaTensor) and isinstance(other, MetaTensor):
                a, b = _spatial(ref.affine, ref.dim() - 1), _spatial(other.affine, ref.dim() - 1)
                if not np.allclose(a, b, atol=self.atol):
                    raise InputError(
                        f"{_name(other)}: {key} affine differs from {keys[0]} affine ({_name(ref)}): "
                        f"spacing {np.round(np.linalg.norm(b[:-1, :-1], axis=0), 4).tolist()} vs "
                        f"{np.round(np.linalg.norm(a[:-1, :-1], axis=0), 4).tolist()}, origin "
                        f"{np.round(b[:-1, -1], 3).tolist()} vs {np.round(a[:-1, -1], 3).tolist()}"
                    )
        return d
