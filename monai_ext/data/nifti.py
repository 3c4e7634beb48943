"""NIfTI output with the input's geometry: one writer for ``segment`` (:func:`write_nifti`) and for the
bundles' ``SaveImaged`` (:class:`NiftiWriter`), both through :func:`set_nifti_geometry` and written atomically.

- the qform and the sform are the same matrix, the one the mask was made on (a 2D image's unused axis
  completed by :func:`complete_affine`);
- the header's codes and units are the input's (:func:`nifti_header_codes`): an MNI-aligned input (code 4)
  or an aligned one (code 2) does not come back as scanner coordinates;
- the file is written under a temporary name and renamed (:func:`~monai_ext.atomic.write_atomically`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np
import torch
from monai.data import NibabelWriter
from monai.data.utils import to_affine_nd
from monai.utils import convert_data_type

from monai_ext.atomic import write_atomically

__all__ = [
    "write_nifti",
    "NiftiWriter",
    "nifti_header_codes",
    "set_nifti_geometry",
    "complete_affine",
    "DEFAULT_NIFTI_CODES",
]


# scanner coordinates, millimetres and seconds: what a DICOM series' geometry is
DEFAULT_NIFTI_CODES = {"qform_code": 1, "sform_code": 1, "xyzt_units": 10}


def nifti_header_codes(meta: Optional[Mapping[str, Any]]) -> Dict[str, int]:
    """The qform and sform codes and the units (``xyzt_units``) of the input a mask is written for, as MONAI's
    NIfTI reader puts them in the image's metadata; scanner coordinates in millimetres for any other input
    (a DICOM series, NRRD, MetaImage)."""
    codes = dict(DEFAULT_NIFTI_CODES)
    for key in codes:
        value = (meta or {}).get(key)
        if value is not None and np.size(value) == 1:
            codes[key] = int(np.asarray(value).item())
    return codes


def complete_affine(affine: np.ndarray, spatial_dims: int) -> np.ndarray:
    """``affine`` with the columns of axes the image does not have (a 2D image's third) made a unit vector
    orthogonal to its axes where they are degenerate (zero, or parallel to an axis): a 2D file may leave them
    so, and NIfTI's qform needs an invertible matrix. The image's own axes and origin are unchanged."""
    a = np.array(affine, dtype=np.float64)
    for axis in range(spatial_dims, 3):
        rest = [a[:3, k] for k in range(3) if k != axis]
        if abs(np.linalg.det(a[:3, :3])) > 1e-9:
            break
        normal = (
            np.cross(*rest) if axis == 2 else np.cross(rest[1], rest[0]) if axis == 1 else np.cross(rest[0], rest[1])
        )
        if np.linalg.norm(normal) < 1e-12:
            break
        a[:3, axis] = normal / np.linalg.norm(normal)
    return a


def set_nifti_geometry(img, affine: np.ndarray, codes: Optional[Mapping[str, int]] = None) -> None:
    """Give a nibabel NIfTI image ``affine`` as its qform and sform (both the same: every reader places the
    mask where we did), with ``codes`` (default :data:`DEFAULT_NIFTI_CODES`) for the two codes and the
    units. Axes a 2D image does not have are completed (:func:`complete_affine`)."""
    affine = complete_affine(affine, min(3, len(img.shape)))
    codes = {**DEFAULT_NIFTI_CODES, **(codes or {})}
    img.set_qform(affine, code=codes["qform_code"])
    img.set_sform(affine, code=codes["sform_code"])
    img.header["xyzt_units"] = codes["xyzt_units"]


def write_nifti(
    labels: Union[np.ndarray, torch.Tensor],
    affine: Union[np.ndarray, torch.Tensor],
    target: Union[str, Path],
    dtype=None,
    codes: Optional[Mapping[str, int]] = None,
) -> Path:
    """Write an image ``(*spatial[, components])`` with the given RAS affine as NIfTI.

    ``dtype`` defaults to a label map's: uint8, or int16 past 255 labels. ``codes``: the header's
    ``qform_code``, ``sform_code`` and ``xyzt_units`` (default :data:`DEFAULT_NIFTI_CODES`; the input's, from
    :func:`nifti_header_codes`, keep what it said its coordinates are).
    """
    import nibabel as nib

    data = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if dtype is None:
        dtype = np.uint8 if data.max(initial=0) <= 255 else np.int16
    data = data.astype(dtype)
    aff = affine.detach().cpu().numpy() if isinstance(affine, torch.Tensor) else np.asarray(affine)
    aff = complete_affine(aff, min(3, data.ndim))
    img = nib.Nifti1Image(data, aff.astype(np.float64))
    set_nifti_geometry(img, aff, codes)
    return write_atomically(Path(target), lambda tmp: nib.save(img, str(tmp)))


class NiftiWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` (for ``SaveImaged(writer=...)``) writing as :func:`write_nifti` does (see the
    module docstring), where MONAI writes code 1 ("scanner") whatever the input said and writes in place."""

    def set_metadata(self, meta_dict: Optional[Mapping] = None, resample: bool = True, **options) -> None:
        self.codes = nifti_header_codes(meta_dict)
        super().set_metadata(meta_dict, resample, **options)

    def write(self, filename, verbose: bool = False, **obj_kwargs) -> None:
        import nibabel as nib

        affine = to_affine_nd(3, convert_data_type(np.eye(4) if self.affine is None else self.affine, np.ndarray)[0])
        affine = complete_affine(affine, min(3, np.ndim(self.data_obj)))  # a 2D image's unused third axis may be zero
        self.data_obj = self.create_backend_obj(self.data_obj, affine=affine, dtype=self.output_dtype, **obj_kwargs)
        set_nifti_geometry(self.data_obj, affine, getattr(self, "codes", None))
        write_atomically(Path(filename), lambda tmp: nib.save(self.data_obj, str(tmp)))
