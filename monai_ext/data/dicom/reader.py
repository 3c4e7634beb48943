"""A MONAI ``ImageReader`` for DICOM series, so that a bundle's ``LoadImaged`` reads DICOM exactly as
``python -m monai_ext segment`` does: :mod:`monai_ext.data.dicom`'s series discovery, geometry checks and
parallel decode, with its one-line errors (a broken series is an error here, never handed on to another
reader that would read it silently).

:class:`~monai_ext.transforms.LoadImageSeriesd` registers it in every bundle's loader; files and folders
that are not DICOM go to the readers MONAI would have chosen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from monai.data import ImageReader
from monai.utils import ensure_tuple

from .decode import read_series
from .series import choose_series, find_series, is_dicom_input

__all__ = ["DicomSeriesReader"]


class DicomSeriesReader(ImageReader):
    """Read one DICOM input (a folder, a ``DICOMDIR`` or a file) holding one series, or the ``series`` of it.

    Args:
        series: the SeriesInstanceUID to read where the input holds several.
        allow_gaps: interpolate missing slices instead of refusing the series.
        slice_tolerance: how far (mm) a slice may lie off the fitted slice grid.
    """

    def __init__(
        self, series: Optional[str] = None, allow_gaps: bool = False, slice_tolerance: Optional[float] = None
    ) -> None:
        super().__init__()
        self.series, self.allow_gaps, self.slice_tolerance = series, allow_gaps, slice_tolerance

    def verify_suffix(self, filename: Union[Sequence[str], str]) -> bool:
        names = ensure_tuple(filename)
        return len(names) == 1 and is_dicom_input(Path(names[0]))

    def read(self, data: Union[Sequence[str], str], **kwargs) -> Path:
        """The input itself: it is read in :meth:`get_data`, so that a broken series raises there, where
        ``LoadImage`` does not try the next reader.

        Raises:
            ValueError: not one DICOM input (``LoadImage`` then tries its other readers).
        """
        if not self.verify_suffix(data):
            raise ValueError(f"{data}: not a DICOM input")
        return Path(ensure_tuple(data)[0])

    def get_data(self, img: Path):
        """``(array, metadata)`` as MONAI's readers give them: channel-last for colour, an RAS affine.

        Raises:
            InputError: several series and none chosen, or a series that is not one regular volume.
        """
        found = {s.uid: s for s in find_series(img)}
        (uid,) = choose_series(str(img), {u: s.summary() for u, s in found.items()}, self.series)
        image, geometry = read_series(found[uid], self.slice_tolerance, self.allow_gaps)
        array = image.numpy()
        colour = array.shape[0] > 1
        meta = {k: v for k, v in image.meta.items() if k != "affine"}
        meta.update(
            affine=geometry.affine.copy(),
            original_affine=geometry.affine.copy(),
            spatial_shape=np.array(geometry.shape),
            original_channel_dim=-1 if colour else float("nan"),
            filename_or_obj=str(img),
        )
        return (np.moveaxis(array, 0, -1) if colour else array[0]), meta
