"""Loading: MONAI's ``LoadImaged`` with DICOM series read by :mod:`monai_ext.data.dicom`."""

from __future__ import annotations

import os
from typing import Any, Dict, Hashable, Mapping, Optional

from monai.data import MetaTensor
from monai.transforms import LoadImaged

from monai_ext.data.dicom.reader import DicomSeriesReader
from monai_ext.data.image_checks import check_affine, check_file_kind

__all__ = ["LoadImageSeriesd"]


class LoadImageSeriesd(LoadImaged):
    """MONAI's ``LoadImaged`` (same arguments), which reads a DICOM input with
    :class:`~monai_ext.data.dicom.reader.DicomSeriesReader`: one series, its geometry checked, the same voxels
    and affine as ``python -m monai_ext segment`` reads. Everything else goes to the readers MONAI picks
    (``reader``, or by file suffix), as before, after two checks that ``segment`` makes too: a NIfTI, NRRD
    or MetaImage file must hold what its name says (a PNG renamed ``.nii`` is refused, not read with an
    identity affine), and a loaded image's affine must not be degenerate (non-finite, a zero spacing).
    Both raise :class:`~monai_ext.errors.InputError` naming the file.

    Args:
        series: the SeriesInstanceUID to read where a DICOM input holds several.
        allow_gaps: interpolate missing DICOM slices instead of refusing the series.
        slice_tolerance: how far (mm) a DICOM slice may lie off the fitted slice grid.
        args, kwargs: MONAI's ``LoadImaged`` arguments.
    """

    def __init__(
        self,
        *args,
        series: Optional[str] = None,
        allow_gaps: bool = False,
        slice_tolerance: Optional[float] = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._loader.register(DicomSeriesReader(series, allow_gaps, slice_tolerance))  # tried first

    def __call__(self, data: Mapping[Hashable, Any], reader=None) -> Dict[Hashable, Any]:
        for key in self.key_iterator(dict(data)):
            for path in data[key] if isinstance(data[key], (list, tuple)) else [data[key]]:
                if isinstance(path, (str, os.PathLike)) and os.path.isfile(path):
                    check_file_kind(path)
        d = super().__call__(data, reader)
        for key in self.key_iterator(d):
            if isinstance(d[key], MetaTensor):
                check_affine(
                    d[key].meta.get("filename_or_obj", key),
                    d[key].affine,
                    d[key].dim() - (1 if self._loader.ensure_channel_first else 0),
                )
        return d
