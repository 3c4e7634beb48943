"""DICOM series in: find the series, check their geometry as the best converters do, decode in parallel.

- :func:`find_series` turns a DICOM input (a folder, searched recursively; a ``DICOMDIR``; one file)
  into its image series. Non-image objects (SEG, RTSTRUCT, presentation states, SR, ...) are left out and
  named; an input that holds nothing else is refused, naming what it holds.
- :func:`series_geometry` places every slice (a file, or a frame of an enhanced multi-frame object) on
  one grid: slices sorted along the slice normal, the grid the least-squares line through every position
  (:func:`fit_slice_grid`; not the median gap, which rounded positions bias), and every position checked
  against a robust line that finds a stray slice. Positions within ``tolerance`` of the grid are accepted
  (scanners round positions, e.g. a GE series within 0.05 mm of a 7.0 mm grid); a missing slice
  is refused, naming the gap and the slices on either side, unless ``allow_gaps`` (then the missing slices
  are interpolated along the normal, with a warning); a tilted (gantry tilt) or non-orthogonal stack is
  refused, naming the angle. This is what dcm2niix and dicom2nifti accept and refuse.
- :func:`read_series` decodes every slice in parallel (pydicom with the pylibjpeg, openjpeg, JPEG-LS and
  RLE plugins: JPEG baseline and lossless, JPEG 2000, JPEG-LS, RLE), applies each slice's rescale, and
  returns a channel-first ``MetaTensor`` with a RAS affine. A slice whose pixel data is missing, short or
  does not decode is a one-line error naming the file.

Voxel ``(i, j, k)`` is column ``i``, row ``j`` of grid slice ``k``; ``Series.frame_index`` maps each source
slice to its grid slice, which is what a DICOM SEG's frames refer to.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from monai_ext.errors import InputError, first_line

__all__ = [
    "Slice",
    "Series",
    "Geometry",
    "find_series",
    "choose_series",
    "series_summary",
    "is_dicom_file",
    "series_geometry",
    "fit_slice_grid",
    "SliceGrid",
    "read_series",
    "default_tolerance",
    "NON_IMAGE_MODALITIES",
]

logger = logging.getLogger("monai_ext.dicom")
logging.getLogger("openjpeg").setLevel(logging.WARNING)  # the JPEG 2000 plugin logs every tile at INFO

#: Objects that are not images, by modality (the SOP class name says which kind exactly).
NON_IMAGE_MODALITIES = {
    "SEG",
    "RTSTRUCT",
    "RTPLAN",
    "RTDOSE",
    "RTRECORD",
    "PR",
    "SR",
    "KO",
    "DOC",
    "REG",
    "FID",
    "RWV",
    "PLAN",
}
_NON_IMAGE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.66",
    "1.2.840.10008.5.1.4.1.1.481",
    "1.2.840.10008.5.1.4.1.1.11",
    "1.2.840.10008.5.1.4.1.1.88",
    "1.2.840.10008.5.1.4.1.1.104",
    "1.2.840.10008.5.1.4.1.1.9",
)


def is_dicom_file(path: Path) -> bool:
    """A Part 10 file (``DICM`` after the 128-byte preamble), or a ``.dcm`` file (some writers omit the preamble)."""
    return path.suffix.lower() == ".dcm" or _has_preamble(path)


def _has_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def default_tolerance(pitch: float) -> float:
    """How far (mm) a slice may lie from the fitted grid: 0.1 mm or 2% of the slice pitch, whichever is more.

    Scanners write positions rounded to 0.01-0.1 mm, and oblique series accumulate the rounding of three
    coordinates; a missing slice moves the next one a whole pitch, far beyond this."""
    return max(0.1, 0.02 * abs(pitch))


@dataclass
class Slice:
    """One image plane: a file, or frame ``frame`` of a multi-frame file."""

    path: Path
    frame: Optional[int]
    position: Optional[np.ndarray]  # ImagePositionPatient (LPS, mm); None for a projection image (CR, DX, US, SC)
    orientation: Optional[np.ndarray]  # ImageOrientationPatient: row direction, column direction
    spacing: np.ndarray  # PixelSpacing: between rows, between columns (mm)
    shape: Tuple[int, int]  # rows, columns
    rescale: Tuple[float, float]  # slope, intercept
    thickness: Optional[float] = None

    def __str__(self) -> str:
        return str(self.path) if self.frame is None else f"{self.path} frame {self.frame + 1}"


@dataclass
class Series:
    """The image objects of one SeriesInstanceUID (headers only; pixel data is read by :func:`read_series`)."""

    uid: str
    headers: List  # pydicom datasets, read without pixel data
    source: Path  # the input the series was found in

    @property
    def first(self):
        return self.headers[0]

    @property
    def description(self) -> str:
        return str(self.first.get("SeriesDescription", "") or "").strip()

    @property
    def modality(self) -> str:
        return str(self.first.get("Modality", "") or "")

    @property
    def number(self) -> Optional[int]:
        value = self.first.get("SeriesNumber", None)
        return int(value) if value not in (None, "") else None

    def summary(self) -> str:
        frames = sum(int(h.get("NumberOfFrames", 1) or 1) for h in self.headers)
        return series_summary(self.uid, self.number, self.modality, self.description, frames)

    def slices(self) -> List[Slice]:
        """Every image plane of the series, with its geometry (see :func:`_slices_of`)."""
        return [s for h in self.headers for s in _slices_of(h)]


def series_summary(uid: str, number: Any, modality: str, description: str, images: Optional[int] = None) -> str:
    """How a series is listed where one must be chosen: ``UID (#number MODALITY 'description', N image(s))``."""
    label = f"#{number} " if number is not None else ""
    count = f", {images} image(s)" if images is not None else ""
    return f"{uid} ({label}{modality} '{description}'{count})"


def choose_series(
    where: str, listing: Dict[str, str], series: Optional[str] = None, each_series: bool = False, other_way: str = ""
) -> List[str]:
    """The series to read among ``listing`` (SeriesInstanceUID -> :func:`series_summary`, in series order), for a
    local folder, a ``DICOMDIR`` and a DICOMweb study alike: ``series`` alone, the only one, or with
    ``each_series`` every one.

    Raises:
        InputError: ``series`` is not among them, or there are several and neither argument chooses; the line
            names ``where`` and lists the series (``other_way``: another way to choose, e.g. a series URL).
    """
    text = "; ".join(listing.values())
    if series is not None:
        if series not in listing:
            raise InputError(f"{where}: no series {series}; it holds {text}")
        return [series]
    if len(listing) <= 1 or each_series:
        return list(listing)
    raise InputError(
        f"{where}: {len(listing)} DICOM series; choose one with series=UID{other_way} or segment each with "
        f"each_series=True: {text}"
    )


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


def _read_header(path: Path):
    import pydicom

    try:
        ds = pydicom.dcmread(path, defer_size=4096, force=True)  # pixel data is read later, from its recorded offset
    except Exception as e:  # pydicom raises many kinds
        raise InputError(f"{path}: unreadable DICOM file ({first_line(e)})") from e
    if "SOPClassUID" not in ds and "Rows" not in ds:
        what = "a damaged or truncated DICOM file" if _has_preamble(path) else "not a DICOM file"
        raise InputError(f"{path}: {what} (no SOP Class UID, no image size)")
    ds.filename = str(path)
    return ds


def _what(ds) -> Optional[str]:
    """The kind of non-image object ``ds`` is (e.g. 'Segmentation Storage (SEG)'), or None for an image."""
    sop = str(ds.get("SOPClassUID", ""))
    modality = str(ds.get("Modality", "") or "")
    if modality in NON_IMAGE_MODALITIES or sop.startswith(_NON_IMAGE_CLASSES) or "Rows" not in ds:
        name = getattr(ds.get("SOPClassUID", None), "name", "") or sop or "an object without pixel rows"
        return f"{name} ({modality})" if modality else name
    return None


def _dicomdir_files(path: Path) -> List[Path]:
    import re
    import warnings

    import pydicom
    from pydicom.fileset import FileSet

    pydicom_logger = logging.getLogger("pydicom")
    level = pydicom_logger.level
    try:
        # pydicom warns (and logs) once per listed file that is missing, then leaves it out: collected here
        pydicom_logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fileset = FileSet(pydicom.dcmread(path))
    except Exception as e:
        raise InputError(f"{path}: unreadable DICOMDIR ({first_line(e)})") from e
    finally:
        pydicom_logger.setLevel(level)
    files = [Path(instance.path) for instance in fileset]
    missing = [f for f in files if not f.is_file()]
    missing += [Path(m.group(1)) for w in caught for m in [re.search(r"does not exist: (.+)$", str(w.message))] if m]
    if missing:
        raise InputError(f"{path}: the DICOMDIR lists {len(missing)} file(s) that do not exist, e.g. {missing[0]}")
    return files


def _is_dicomdir(path: Path) -> bool:
    return path.name.upper() == "DICOMDIR" and is_dicom_file(path)


def find_series(path: Union[str, Path]) -> List["Series"]:
    """The image series of a DICOM input: a folder (searched recursively), a ``DICOMDIR`` or one file.

    Headers are read without pixel data (its offset is kept for :func:`read_series`). Series come sorted by series number, then UID.

    Raises:
        InputError: no DICOM files, an unreadable file, or only non-image objects (named).
    """
    path = Path(path)
    if path.is_file():
        files = _dicomdir_files(path) if _is_dicomdir(path) else [path]
    elif path.is_dir():
        dicomdir = [p for p in path.iterdir() if p.is_file() and _is_dicomdir(p)]
        if dicomdir:
            files = _dicomdir_files(dicomdir[0])
        else:
            files = sorted(
                p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".") and is_dicom_file(p)
            )
    else:
        raise InputError(f"{path}: no such file or folder")
    if not files:
        raise InputError(f"{path}: no DICOM files")
    headers = [_read_header(f) for f in files]  # parsing holds the GIL: threads would only add switching
    images, others = [], {}
    for ds in headers:
        kind = _what(ds)
        if kind is None:
            images.append(ds)
        else:
            others.setdefault(kind, []).append(Path(ds.filename))
    if not images:
        kinds = "; ".join(
            kind if len(files) == 1 else f"{kind}: {len(paths)} file(s), e.g. {paths[0].name}"
            for kind, paths in others.items()
        )
        raise InputError(f"{path}: not an image: {kinds}; give the image series instead")
    for kind, paths in others.items():
        logger.info("%s: left out %d non-image object(s): %s", path, len(paths), kind)
    unique: Dict[str, object] = {}
    for ds in images:  # the same instance twice (a copied file) counts once
        unique.setdefault(str(ds.get("SOPInstanceUID", "")) or ds.filename, ds)
    if len(unique) < len(images):
        logger.info("%s: left out %d duplicate file(s) of the same instance", path, len(images) - len(unique))
        images = list(unique.values())
    by_uid: Dict[str, List] = {}
    for ds in images:
        by_uid.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(ds)
    series = [Series(uid, sorted(group, key=lambda d: d.filename), path) for uid, group in by_uid.items()]
    return sorted(series, key=lambda s: (s.number if s.number is not None else 1 << 30, s.uid))


def _workers(workers: Optional[int], tasks: int) -> int:
    if workers is None:
        try:
            workers = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            workers = os.cpu_count() or 1
        workers = min(workers, int(os.environ.get("OMP_NUM_THREADS", workers)) or workers)
    return max(1, min(workers, tasks))


def _decimals(ds, keyword: str) -> Optional[List[float]]:
    """A decimal string element's values as floats, parsed from the raw bytes when the element has not been
    converted yet (pydicom's DS objects cost more than the rest of the header); None where it is absent."""
    from pydicom.datadict import tag_for_keyword

    if keyword not in ds:
        return None
    value = ds.get_item(tag_for_keyword(keyword)).value
    if isinstance(value, (bytes, bytearray)):
        text = value.decode("ascii").strip(" \x00")
        return [float(v) for v in text.split("\\")] if text else None
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return [float(v) for v in value.split("\\")]
    return [float(v) for v in value] if hasattr(value, "__iter__") else [float(value)]


def _vector(ds, keyword: str, length: int, where: str) -> np.ndarray:
    """A multi-valued decimal string (``ImagePositionPatient``, ...) as ``length`` finite floats, or an error."""
    try:
        array = np.array(_decimals(ds, keyword) or [], dtype=np.float64)
    except (TypeError, ValueError, UnicodeDecodeError):
        array = np.zeros(0)
    if array.shape != (length,) or not np.isfinite(array).all():
        raise InputError(f"{where}: no valid {keyword} (got {ds.get(keyword, None)!r}); not part of a volume")
    return array


def _scalar(ds, keyword: str, default: Optional[float] = None) -> Optional[float]:
    """A single decimal string (``RescaleSlope``, ``SliceThickness``...) as a float, or ``default``."""
    try:
        values = _decimals(ds, keyword)
    except (TypeError, ValueError, UnicodeDecodeError):
        return default
    return float(values[0]) if values else default


def _rescale(ds, where: str) -> Tuple[float, float]:
    """``RescaleSlope`` (absent: 1) and ``RescaleIntercept`` (absent: 0). A slope of 0 or one that is not a
    finite number would make every voxel the intercept: refused, not read as 1."""
    slope, intercept = _scalar(ds, "RescaleSlope", None), _scalar(ds, "RescaleIntercept", 0.0)
    if slope is None:
        if str(ds.get("RescaleSlope", "") or "").strip():
            raise InputError(f"{where}: RescaleSlope {str(ds.get('RescaleSlope')).strip()!r} is not a number")
        slope = 1.0
    if slope == 0 or not np.isfinite(slope) or intercept is None or not np.isfinite(intercept):
        raise InputError(
            f"{where}: RescaleSlope {slope:g}, RescaleIntercept {intercept}: every voxel would be "
            f"{'the intercept' if slope == 0 else 'undefined'}; the header is damaged"
        )
    return float(slope), float(intercept)


def _find(groups: Sequence, keyword: str):
    """The first of ``groups`` (functional group items) holding a ``keyword`` sequence, its first item."""
    for group in groups:
        if group is not None and keyword in group and len(group[keyword].value):
            return group[keyword][0]
    return None


def _slices_of(ds) -> List[Slice]:
    """The planes of one header: one for a classic image, one per frame for an enhanced multi-frame one."""
    path = Path(ds.filename)
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows < 1 or columns < 1:
        raise InputError(f"{path}: no image size (Rows {rows}, Columns {columns})")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if "PerFrameFunctionalGroupsSequence" not in ds:
        if frames > 1:
            raise InputError(
                f"{path}: a {frames}-frame object without per-frame geometry (a cine or a secondary capture); not a volume"
            )
        where = str(path)
        slope, intercept = _rescale(ds, where)
        if "ImagePositionPatient" not in ds and "ImageOrientationPatient" not in ds:  # a projection image: pixels only
            spacing = next(
                (_vector(ds, k, 2, where) for k in ("PixelSpacing", "ImagerPixelSpacing") if k in ds), np.ones(2)
            )
            return [Slice(path, None, None, None, spacing, (rows, columns), (slope, intercept))]
        return [
            Slice(
                path,
                None,
                _vector(ds, "ImagePositionPatient", 3, where),
                _vector(ds, "ImageOrientationPatient", 6, where),
                _vector(ds, "PixelSpacing", 2, where),
                (rows, columns),
                (slope, intercept),
                _scalar(ds, "SliceThickness"),
            )
        ]
    shared = ds["SharedFunctionalGroupsSequence"][0] if "SharedFunctionalGroupsSequence" in ds else None
    per_frame = ds["PerFrameFunctionalGroupsSequence"]
    if len(per_frame.value) != frames:
        raise InputError(f"{path}: {len(per_frame.value)} per-frame geometry items for {frames} frames")
    slices = []
    for f, item in enumerate(per_frame):
        where = f"{path} frame {f + 1}"
        groups = (item, shared)
        position, orientation = _find(groups, "PlanePositionSequence"), _find(groups, "PlaneOrientationSequence")
        measures, rescale = _find(groups, "PixelMeasuresSequence"), _find(groups, "PixelValueTransformationSequence")
        if position is None or orientation is None or measures is None:
            raise InputError(f"{where}: no plane position, orientation or pixel spacing; not part of a volume")
        slope, intercept = _rescale(rescale if rescale is not None else ds, where)
        slices.append(
            Slice(
                path,
                f,
                _vector(position, "ImagePositionPatient", 3, where),
                _vector(orientation, "ImageOrientationPatient", 6, where),
                _vector(measures, "PixelSpacing", 2, where),
                (rows, columns),
                (slope, intercept),
                _scalar(measures, "SliceThickness"),
            )
        )
    return slices


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


def _native(header) -> Optional[np.ndarray]:
    """The pixels of an uncompressed single-sample object straight from the file, ``(frames, rows, columns)``;
    None where pydicom's general decoder is needed (compressed, colour, signed with unused high bits)."""
    syntax = header.file_meta.get("TransferSyntaxUID", None)
    bits, stored = int(header.get("BitsAllocated", 0) or 0), int(header.get("BitsStored", 0) or 0)
    signed = int(header.get("PixelRepresentation", 0) or 0) == 1
    if (
        syntax is None
        or syntax.is_compressed
        or not syntax.is_transfer_syntax
        or int(header.get("SamplesPerPixel", 1) or 1) != 1
        or bits not in (8, 16, 32)
        or (signed and stored != bits)
        or "PixelData" not in header
        or syntax == "1.2.840.10008.1.2.1.99"
        or str(header.get("PhotometricInterpretation", "")) == "PALETTE COLOR"
    ):
        return None
    element = header.get_item("PixelData", keep_deferred=True)
    frames, rows, columns = int(header.get("NumberOfFrames", 1) or 1), int(header.Rows), int(header.Columns)
    dtype = np.dtype(f"{'<' if syntax.is_little_endian else '>'}{'i' if signed else 'u'}{bits // 8}")
    count = frames * rows * columns
    if isinstance(element.value, (bytes, bytearray)):  # small enough to have been read with the header
        raw = bytes(element.value[: count * dtype.itemsize])
    elif getattr(element, "is_raw", False) and element.value is None:  # deferred: read it from its offset
        with open(header.filename, "rb") as f:
            f.seek(element.value_tell)
            raw = f.read(count * dtype.itemsize)
    else:
        return None
    if len(raw) < count * dtype.itemsize:
        raise _Short(
            f"truncated: {len(raw)} bytes of pixel data where {rows}x{columns}x{frames} pixels need {count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(frames, rows, columns)


class _Short(Exception):
    pass


def _decode(header) -> Tuple[np.ndarray, Optional[str]]:
    """All frames of one file as ``(frames, rows, columns[, samples])``; or the problem, in words.

    Uncompressed pixels are read from the file at the offset the header scan recorded; everything else is
    decoded by pydicom (and its JPEG, JPEG-LS, JPEG 2000 and RLE plugins)."""
    import pydicom

    if "PixelData" not in header and "FloatPixelData" not in header and "DoubleFloatPixelData" not in header:
        return np.zeros(0), "no pixel data"
    try:
        array = _native(header)
    except _Short as e:
        return np.zeros(0), str(e)
    except OSError as e:
        return np.zeros(0), f"unreadable ({e})"
    frames, samples = int(header.get("NumberOfFrames", 1) or 1), int(header.get("SamplesPerPixel", 1) or 1)
    if array is None:
        try:
            ds = pydicom.dcmread(header.filename, force=True)
            array = ds.pixel_array
        except Exception as e:  # decoders raise many kinds
            syntax = getattr(header.file_meta.get("TransferSyntaxUID", None), "name", "unknown transfer syntax")
            return np.zeros(0), f"pixel data does not decode ({syntax}: {first_line(e)})"
        if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            array, samples = apply_color_lut(array, ds), 3
        if frames == 1:
            array = array[None]
    expected = (frames, int(header.Rows), int(header.Columns)) + ((samples,) if samples > 1 else ())
    if array.shape != expected:
        return np.zeros(0), f"decoded pixel data has shape {list(array.shape)}, the header says {list(expected)}"
    return array, None


def _decode_compressed(headers: List, workers: Optional[int]) -> Dict[str, Tuple[np.ndarray, Optional[str]]]:
    """:func:`_decode` the compressed files among ``headers`` in worker processes (the decoders hold the GIL),
    by file name; the rest are read where they are placed (:func:`read_series`)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    compressed = [h.filename for h in headers if _is_compressed(h)]
    n = _workers(workers, len(compressed))
    if n < 2 or len(compressed) < 4:
        return {}
    # fork: the workers need only pydicom and numpy, already imported (as PyTorch's DataLoader workers do)
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork")) as pool:
        return dict(zip(compressed, pool.map(_decode_file, compressed, chunksize=max(1, len(compressed) // (4 * n)))))


def _decode_file(path: str) -> Tuple[np.ndarray, Optional[str]]:
    return _decode(_read_header(Path(path)))


def _is_compressed(header) -> bool:
    syntax = header.file_meta.get("TransferSyntaxUID", None)
    return syntax is not None and syntax.is_transfer_syntax and syntax.is_compressed


def _voxel_type(series: Series, geometry: Geometry, depth: int) -> np.dtype:
    """The stored integers' type where every slice's rescale is ``value + integral intercept`` and that type
    holds the result (as ITK returns CT in int16), else float32 (rescale slopes, float pixels, interpolated gaps)."""
    first = series.first
    bits, stored = int(first.get("BitsAllocated", 0) or 0), int(first.get("BitsStored", 0) or 0)
    intercepts = {s.rescale[1] for s in geometry.slices}
    if (
        len(geometry.index) != depth
        or bits not in (8, 16)
        or not 0 < stored <= bits
        or "PixelData" not in first
        or str(first.get("PhotometricInterpretation", "")) == "PALETTE COLOR"
        or any(s.rescale[0] != 1 for s in geometry.slices)
        or any(float(i) != int(i) for i in intercepts)
        or any(
            int(h.get("BitsStored", 0) or 0) != stored
            or int(h.get("PixelRepresentation", 0) or 0) != int(first.get("PixelRepresentation", 0) or 0)
            for h in series.headers
        )
    ):
        return np.dtype(np.float32)
    signed = int(first.get("PixelRepresentation", 0) or 0) == 1
    low, high = (-(2 ** (stored - 1)), 2 ** (stored - 1) - 1) if signed else (0, 2**stored - 1)
    low, high = low + int(min(intercepts)), high + int(max(intercepts))
    for candidate in (np.uint8, np.int16, np.int32):  # types every torch operation takes
        info = np.iinfo(candidate)
        if info.min <= low and high <= info.max:
            return np.dtype(candidate)
    return np.dtype(np.float32)


def read_series(
    series: Series, tolerance: Optional[float] = None, allow_gaps: bool = False, workers: Optional[int] = None
):
    """Decode a series onto its grid: a ``MetaTensor`` ``(C, columns, rows, slices)`` with a RAS affine
    (``(C, columns, rows)`` for a projection image without a patient plane, such as a radiograph).

    Each slice's own RescaleSlope/RescaleIntercept is applied. The voxels keep the stored integer type where
    that holds the rescaled values (CT in int16, as ITK reads it), else they are float32 (``_voxel_type``).
    ``C`` is 1, or 3 for colour (RGB, YBR and
    palette colour images arrive as RGB).
    Returns ``(image, geometry)``; see :func:`series_geometry` for the checks and the arguments.

    Raises:
        InputError: a geometry problem, or a file whose pixel data is missing, short or does not decode.
    """
    import torch
    from monai.data import MetaTensor
    from monai.utils import SpaceKeys

    geometry = series_geometry(series, tolerance, allow_gaps)
    for text in geometry.warnings:
        logger.warning("%s", text)
    by_path = {h.filename: h for h in series.headers}
    planes_of: Dict[str, List[Tuple[Slice, int]]] = {}
    for s, k in zip(geometry.slices, geometry.index):
        planes_of.setdefault(str(s.path), []).append((s, k))
    first = series.first
    colour = (
        int(first.get("SamplesPerPixel", 1) or 1) == 3
        or str(first.get("PhotometricInterpretation", "")) == "PALETTE COLOR"
    )
    channels = 3 if colour else 1
    columns, rows, depth = (*geometry.shape, 1)[:3]
    dtype = _voxel_type(series, geometry, depth)
    planes = np.empty((depth, rows, columns, channels), dtype=dtype)  # filled plane by plane, contiguously
    decoded = _decode_compressed(list(by_path.values()), workers)

    def place(path: str) -> Optional[str]:
        """Read (or take the decoded) pixels of one file and put each of its planes on the grid; or the problem."""
        frames, problem = decoded.pop(path) if path in decoded else _decode(by_path[path])
        if problem is None and (frames.shape[3] if frames.ndim == 4 else 1) != channels:
            problem = f"{frames.shape[3] if frames.ndim == 4 else 1} sample(s) per pixel where {series.first.filename} has {channels}"
        if problem:
            return problem
        for s, k in planes_of[path]:
            plane = planes[k]
            pixels = frames[s.frame or 0].reshape(rows, columns, channels)
            slope, intercept = s.rescale
            if dtype == np.float32:
                plane[...] = pixels
                if slope != 1:
                    plane *= np.float32(slope)
                if intercept != 0:
                    plane += np.float32(intercept)
            else:  # stored values plus an integral intercept, in a type _voxel_type checked holds them
                np.add(pixels, np.int32(intercept), out=plane, casting="unsafe")  # in int32, then stored
        return None

    with ThreadPoolExecutor(
        _workers(workers, len(planes_of))
    ) as pool:  # file reads and numpy's conversions release the GIL
        problems = dict(zip(planes_of, pool.map(place, planes_of)))
    for name, problem in sorted(problems.items()):
        if problem:
            raise InputError(f"{name}: {problem}")
    if len(geometry.index) != depth:  # allow_gaps: linear interpolation along the normal
        known = np.array(geometry.index)
        for k in sorted(set(range(depth)) - set(geometry.index)):
            after = int(np.searchsorted(known, k))
            lo, hi = known[after - 1], known[after]
            w = (k - lo) / (hi - lo)
            planes[k] = (1 - w) * planes[lo] + w * planes[hi]
    volume = planes.transpose(3, 2, 1, 0)  # (C, columns, rows, slices), a view
    if geometry.planar:
        volume = volume[..., 0]
    affine = torch.as_tensor(geometry.affine, dtype=torch.float64)
    meta = {
        "filename_or_obj": str(series.source),
        "original_affine": geometry.affine.copy(),
        "spatial_shape": np.array(geometry.shape),
        "space": SpaceKeys.RAS,
        "original_channel_dim": 0 if channels > 1 else float("nan"),
        "spacing": np.array(
            [geometry.slices[0].spacing[1], geometry.slices[0].spacing[0], geometry.pitch][: len(geometry.shape)]
        ),
        "series_instance_uid": series.uid,
    }
    return MetaTensor(torch.from_numpy(volume), affine=affine, meta=meta), geometry
