"""Where a series' slices lie: one grid fitted through every position as the best converters do
(:func:`fit_slice_grid`: the least-squares line, a robust line to find a stray slice), checked for gaps,
tilt and drift (:func:`series_geometry`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import List, NamedTuple, Optional, Tuple

import numpy as np

from monai_ext.errors import InputError

__all__ = ["Geometry", "SliceGrid", "fit_slice_grid", "series_geometry", "default_tolerance"]

from .series import Series, Slice, _scalar

logger = logging.getLogger("monai_ext.dicom")


def default_tolerance(pitch: float) -> float:
    """How far (mm) a slice may lie from the fitted grid: 0.1 mm or 2% of the slice pitch, whichever is more.

    Scanners write positions rounded to 0.01-0.1 mm, and oblique series accumulate the rounding of three
    coordinates; a missing slice moves the next one a whole pitch, far beyond this."""
    return max(0.1, 0.02 * abs(pitch))


@dataclass
class Geometry:
    """Where the slices lie: ``slices`` sorted along the normal, each at grid slice ``index[k]``."""

    slices: List[Slice]
    index: List[int]
    affine: np.ndarray  # voxel (column, row[, slice]) -> RAS mm
    shape: Tuple[int, ...]  # columns, rows[, slices]
    pitch: float
    residual: float  # the largest distance (mm) of a slice from the fitted grid
    warnings: List[str] = field(default_factory=list)

    @property
    def planar(self) -> bool:
        """A single image without a patient plane (a radiograph, an ultrasound or endoscopy frame): 2D."""
        return len(self.shape) == 2


class SliceGrid(NamedTuple):
    """Slice ``k`` lies ``distance[k] = origin + pitch * index[k]`` mm along the normal (least squares);
    ``off[k]`` is its distance from the robust line of slope ``robust_pitch``."""

    index: np.ndarray
    pitch: float
    origin: float
    off: np.ndarray
    robust_pitch: float


def fit_slice_grid(distance: np.ndarray) -> SliceGrid:
    """Fit a regular grid to slice distances along the normal (sorted, distinct): see :class:`SliceGrid`.
    A missing slice skips an index; ``off`` finds a stray slice that least squares would spread over its
    neighbours.

    Scanners round positions (to 0.01-0.1 mm, in an oblique frame on three coordinates), so neighbouring gaps
    cycle through a few values whose median need not be the pitch, and a pitch fitted to gaps drifts over a
    long series (0.3 mm over 20 slices of a GE series; a whole slice over 300). So the median gap only
    rounds each gap to a whole number of pitches; the robust line takes the median slope of slice pairs half
    the series apart (a stray slice moves two of them; the rounding is divided by the span), and the grid is
    the least-squares line through every slice.
    """
    gaps = np.diff(distance)
    index = np.concatenate([[0], np.cumsum(np.rint(gaps / np.median(gaps)))]).astype(int)
    half = max(1, len(distance) // 2)
    span = index[half:] - index[:-half]
    slope = (distance[half:] - distance[:-half])[span > 0] / span[span > 0]
    robust = float(np.median(slope)) if slope.size else float(np.median(gaps))
    off = distance - robust * index
    off -= np.median(off)
    if index[-1] == 0:  # every slice rounded onto the first: no line to fit
        return SliceGrid(index, robust, float(distance[0]), off, robust)
    pitch, origin = np.polyfit(index, distance, 1)
    return SliceGrid(index, float(pitch), float(origin), off, robust)


def series_geometry(series: Series, tolerance: Optional[float] = None, allow_gaps: bool = False) -> Geometry:
    """Place the series' slices on one regular grid, or refuse (see the module docstring).

    Args:
        series: the series (from :func:`find_series`).
        tolerance: how far (mm) a slice may lie from the fitted grid (default :func:`default_tolerance`).
        allow_gaps: interpolate missing slices instead of refusing the series.

    Raises:
        InputError: one line naming the series or the slice and the problem.
    """
    where = series.source
    slices = series.slices()
    first = slices[0]
    if any(s.position is None for s in slices):
        if len(slices) > 1:
            raise InputError(
                f"{where}: {len(slices)} images without ImagePositionPatient/ImageOrientationPatient; not one volume"
            )
        # as ITK reads such an image: origin 0, identity direction in LPS, the pixel spacing
        dy, dx = first.spacing
        return Geometry(slices, [0], np.diag([-dx, -dy, 1.0]), (first.shape[1], first.shape[0]), 1.0, 0.0)
    for s in slices[1:]:
        if s.shape != first.shape:
            raise InputError(
                f"{s}: {s.shape[0]}x{s.shape[1]} pixels where {first} has {first.shape[0]}x{first.shape[1]}; not one volume"
            )
        if not np.allclose(s.orientation, first.orientation, atol=1e-3):
            raise InputError(f"{where}: slices with different orientations (e.g. {s.path.name}); not one volume")
        if not np.allclose(s.spacing, first.spacing, rtol=1e-3, atol=1e-4):
            raise InputError(
                f"{s}: pixel spacing {s.spacing.tolist()} where {first} has {first.spacing.tolist()}; not one volume"
            )
    row, column = first.orientation[:3], first.orientation[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(column) - 1) > 1e-2 or abs(np.dot(row, column)) > 1e-2:
        raise InputError(
            f"{first}: ImageOrientationPatient {first.orientation.tolist()} is not two orthogonal unit vectors"
        )
    row, column = row / np.linalg.norm(row), column / np.linalg.norm(column)
    normal = np.cross(row, column)
    distance = np.array([np.dot(s.position, normal) for s in slices])
    order = np.argsort(distance, kind="stable")
    slices, distance = [slices[k] for k in order], distance[order]

    if len(slices) == 1:
        pitch = first.thickness or _scalar(series.first, "SpacingBetweenSlices") or 1.0
        index, residual, warnings, origin_lps = [0], 0.0, [], first.position
    else:
        gaps = np.diff(distance)
        same = np.flatnonzero(gaps < 1e-3)
        if same.size:
            a, b = slices[same[0]], slices[same[0] + 1]
            raise InputError(
                f"{where}: {a} and {b} lie at the same position ({same.size} such pair(s)): "
                "several acquisitions, echoes or time points in one series; not one volume"
            )
        index, pitch, origin, off, robust_pitch = fit_slice_grid(distance)
        tolerance = default_tolerance(pitch) if tolerance is None else float(tolerance)
        fitted = distance - (origin + pitch * index)
        if np.abs(fitted).max() > tolerance or np.abs(off).max() > 2 * tolerance:
            worst = int(np.argmax(np.abs(off)))  # the slice the robust line finds (least squares spreads a stray slice)
            raise InputError(
                f"{slices[worst]} lies {abs(off[worst]):.3f} mm off the {robust_pitch:.3f} mm slice grid of its series "
                f"(tolerance {tolerance:.3f} mm): a stray or unevenly spaced slice"
            )
        residual = float(np.abs(distance - (origin + pitch * index)).max())
        jumps = np.flatnonzero(np.diff(index) > 1)
        warnings = []
        if jumps.size:
            k = int(jumps[0])
            missing = int(index[-1] + 1 - len(slices))
            text = (
                f"{where}: {missing} missing slice(s): a {distance[k + 1] - distance[k]:.3f} mm gap between {slices[k].path.name} "
                f"and {slices[k + 1].path.name} where the pitch is {pitch:.3f} mm"
            )
            if not allow_gaps:
                raise InputError(text + " (pass allow_gaps=True to interpolate them)")
            warnings.append(text + "; interpolated along the slice normal")
        # a tilted (gantry tilt) or sheared stack: the positions drift across the plane
        lateral = np.array(
            [
                (s.position - slices[0].position) - np.dot(s.position - slices[0].position, normal) * normal
                for s in slices
            ]
        )
        drift = float(np.linalg.norm(lateral, axis=1).max())
        if drift > tolerance:
            span = distance[-1] - distance[0]
            angle = float(np.degrees(np.arctan2(drift, span)))
            raise InputError(
                f"{where}: the slices are not stacked along their normal (gantry tilt or a sheared stack, {angle:.2f} degrees; "
                f"{drift:.2f} mm drift): refused rather than resampled"
            )
        index = index.tolist()
        # the grid's first slice: least squares along the normal, the mean of every slice across it
        origin_lps = (
            np.mean([s.position - np.dot(s.position, normal) * normal for s in slices], axis=0) + origin * normal
        )
    dy, dx = first.spacing  # between rows, between columns
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row * dx, column * dy, normal * pitch, origin_lps
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS
    shape = (first.shape[1], first.shape[0], int(index[-1]) + 1)
    return Geometry(slices, [int(i) for i in index], affine, shape, float(pitch), residual, warnings)
