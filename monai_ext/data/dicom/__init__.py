"""DICOM in and out: find the series, check their geometry as the best converters do, decode in parallel; the
MONAI reader, SEG and RTSTRUCT writing, DICOMweb, and writing a series.

- :func:`find_series` (:mod:`.series`) turns a DICOM input (a folder, searched recursively; a ``DICOMDIR``; one file)
  into its image series. Non-image objects (SEG, RTSTRUCT, presentation states, SR, ...) are left out and
  named; an input that holds nothing else is refused, naming what it holds.
- :func:`series_geometry` (:mod:`.geometry`) places every slice (a file, or a frame of an enhanced multi-frame object) on
  one grid: slices sorted along the slice normal, the grid the least-squares line through every position
  (:func:`fit_slice_grid`; not the median gap, which rounded positions bias), and every position checked
  against a robust line that finds a stray slice. Positions within ``tolerance`` of the grid are accepted
  (scanners round positions, e.g. a GE series within 0.05 mm of a 7.0 mm grid); a missing slice
  is refused, naming the gap and the slices on either side, unless ``allow_gaps`` (then the missing slices
  are interpolated along the normal, with a warning); a tilted (gantry tilt) or non-orthogonal stack is
  refused, naming the angle. This is what dcm2niix and dicom2nifti accept and refuse.
- :func:`read_series` (:mod:`.decode`) decodes every slice in parallel (pydicom with the pylibjpeg, openjpeg, JPEG-LS and
  RLE plugins: JPEG baseline and lossless, JPEG 2000, JPEG-LS, RLE), applies each slice's rescale, and
  returns a channel-first ``MetaTensor`` with a RAS affine. A slice whose pixel data is missing, short or
  does not decode is a one-line error naming the file.

Voxel ``(i, j, k)`` is column ``i``, row ``j`` of grid slice ``k``; ``Series.frame_index`` maps each source
slice to its grid slice, which is what a DICOM SEG's frames refer to.

The other modules, imported where they are used (they need more packages): :mod:`.reader` (MONAI's
``ImageReader`` for a series), :mod:`.seg` (DICOM SEG and RT Structure Set output), :mod:`.web` (DICOMweb:
QIDO-RS, WADO-RS, STOW-RS), :mod:`.export` (a volume written as a DICOM series).
"""

from .decode import read_series
from .geometry import Geometry, SliceGrid, default_tolerance, fit_slice_grid, series_geometry
from .series import (
    NON_IMAGE_MODALITIES,
    Series,
    Slice,
    choose_series,
    find_series,
    is_dicom_file,
    is_dicom_input,
    series_summary,
)

__all__ = [
    "Slice",
    "Series",
    "Geometry",
    "find_series",
    "choose_series",
    "series_summary",
    "is_dicom_file",
    "is_dicom_input",
    "series_geometry",
    "fit_slice_grid",
    "SliceGrid",
    "read_series",
    "default_tolerance",
    "NON_IMAGE_MODALITIES",
]
