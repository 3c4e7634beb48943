"""NIfTI outputs that keep the input's header codes, written under a temporary name and then renamed."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

import numpy as np
from monai.data import NibabelWriter
from monai.data.utils import to_affine_nd
from monai.utils import convert_data_type

from monai_ext.data.volume_io import complete_affine, nifti_header_codes, set_nifti_geometry, write_atomically

__all__ = ["NiftiWriter"]

class NiftiWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` (for ``SaveImaged(writer=...)``) with two differences:

    - qform and sform are the same matrix, the geometry the mask was made on (a 2D image's unused axis
      completed by :func:`~monai_ext.data.volume_io.complete_affine`);
    - the header's qform and sform codes and units are the input's (:func:`nifti_header_codes`), where MONAI
      writes code 1 ("scanner") for both whatever the input said: an MNI-aligned input (code 4) or an
      aligned one (code 2) would come back as scanner coordinates;
    - the file is written under a temporary name and renamed (:func:`~monai_ext.data.volume_io.write_atomically`),
      so a crash or a full disk never leaves a half-written mask under the final name.
    """

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
