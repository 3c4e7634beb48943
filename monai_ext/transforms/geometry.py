"""A training case whose image and label do not lie on the same grid is an error, not a silent crop; a label
that covers a block of its image's grid (a DICOM SEG without its empty frames) is placed on it where asked."""

from __future__ import annotations

from typing import Dict, Hashable, Mapping, Optional, Sequence

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

    A DICOM SEG may leave out its empty frames (dcmqi does, for MONAI Label), and MONAI Label converts such a
    SEG to a label map that covers only the frames it holds: the same spacing and axes as its image, fewer
    slices, another origin. The keys in ``pad_keys`` may be such a block: where its voxels are whole voxels of
    the first key's grid and lie inside it, the block is placed on that grid, zero (background) outside. Not
    by default, where a label one slice short is an error.

    Args:
        keys: the image key first, then the keys that must match it (e.g. ``["image", "label"]``).
        atol: tolerance on affine entries (mm), and on the block's offset (voxels).
        pad_keys: keys that may cover a block of the first key's grid, placed on it.

    Raises:
        InputError: one line naming the file, the key and the shapes or affines that differ.
    """

    def __init__(
        self,
        keys: Sequence[str],
        atol: float = 1e-3,
        allow_missing_keys: bool = False,
        pad_keys: Sequence[str] = (),
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.atol = atol
        self.pad_keys = set(pad_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> Dict[Hashable, torch.Tensor]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if len(keys) < 2:
            return d
        ref = d[keys[0]]
        for key in keys[1:]:
            other = d[key]
            if tuple(other.shape[1:]) != tuple(ref.shape[1:]):
                placed = self._placed(ref, other)
                if placed is not None and key in self.pad_keys:
                    d[key] = other = placed
                else:
                    raise InputError(
                        f"{_name(other)}: {key} shape {list(other.shape[1:])} differs from {keys[0]} shape "
                        f"{list(ref.shape[1:])} ({_name(ref)})"
                        + (
                            f"; it covers a block of the {keys[0]}'s grid, as a DICOM SEG without its empty frames "
                            f"does: pad_keys=['{key}'] (the bundles' pad_label_to_image) places it"
                            if placed is not None
                            else ""
                        )
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

    def _placed(self, ref: torch.Tensor, block: torch.Tensor) -> Optional[MetaTensor]:
        """``block`` on ``ref``'s grid, zero outside, where it is a block of whole voxels inside that grid."""
        if not (isinstance(ref, MetaTensor) and isinstance(block, MetaTensor)) or ref.dim() != block.dim():
            return None
        dims = ref.dim() - 1
        a, b = _spatial(ref.affine, dims), _spatial(block.affine, dims)
        if not np.allclose(a[:-1, :-1], b[:-1, :-1], atol=self.atol):  # other spacing or axes: not a block
            return None
        offset = np.linalg.solve(a[:-1, :-1], b[:-1, -1] - a[:-1, -1])  # the block's first voxel, in ref's voxels
        start = np.rint(offset).astype(int)
        stop = start + np.asarray(block.shape[1:])
        if not np.allclose(offset, start, atol=self.atol) or (start < 0).any() or (stop > ref.shape[1:]).any():
            return None
        out = torch.zeros((block.shape[0], *ref.shape[1:]), dtype=block.dtype, device=block.device)
        out[(slice(None), *(slice(int(i), int(j)) for i, j in zip(start, stop)))] = block.as_tensor()
        meta = dict(block.meta)
        meta.pop("affine", None)
        for key in ("spatial_shape", "original_affine"):  # now on the image's grid
            if key in ref.meta:
                meta[key] = ref.meta[key]
        return MetaTensor(out, affine=ref.affine.clone(), meta=meta)
