"""Loading: MONAI's ``LoadImaged`` with DICOM series read by :mod:`monai_ext.data.dicom`."""

from __future__ import annotations

from typing import Optional

from monai.transforms import LoadImaged

from monai_ext.data.dicom_reader import DicomSeriesReader

__all__ = ["LoadImageSeriesd"]


class LoadImageSeriesd(LoadImaged):
    """MONAI's ``LoadImaged`` (same arguments), which reads a DICOM input with
    :class:`~monai_ext.data.dicom_reader.DicomSeriesReader`: one series, its geometry checked, the same voxels
    and affine as ``python -m monai_ext segment`` reads. Everything else goes to the readers MONAI picks
    (``reader``, or by file suffix), as before.

    Args:
        series: the SeriesInstanceUID to read where a DICOM input holds several.
        allow_gaps: interpolate missing DICOM slices instead of refusing the series.
        slice_tolerance: how far (mm) a DICOM slice may lie off the fitted slice grid.
        args, kwargs: MONAI's ``LoadImaged`` arguments.
    """

    def __init__(self, *args, series: Optional[str] = None, allow_gaps: bool = False, slice_tolerance: Optional[float] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._loader.register(DicomSeriesReader(series, allow_gaps, slice_tolerance))  # tried first
