"""DICOM inputs as image series: find them (a folder, searched recursively; a ``DICOMDIR``; one file), leave out
non-image objects (naming them), read each image plane's position from its header, and choose one series
where there are several (:func:`choose_series`, for local inputs and DICOMweb studies alike).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from monai_ext.errors import InputError, first_line

__all__ = [
    "Slice",
    "Series",
    "find_series",
    "choose_series",
    "series_summary",
    "is_dicom_file",
    "is_dicom_input",
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


def is_dicom_input(path: Path) -> bool:
    """A DICOM file (``DICOMDIR`` included), or a folder with a DICOM file or a ``DICOMDIR`` directly inside."""
    if path.is_file():
        return is_dicom_file(path)
    return path.is_dir() and any(p.is_file() and is_dicom_file(p) for p in path.iterdir())


def _has_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


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
    except (TypeError, ValueError):  # UnicodeDecodeError is a ValueError
        array = np.zeros(0)
    if array.shape != (length,) or not np.isfinite(array).all():
        raise InputError(f"{where}: no valid {keyword} (got {ds.get(keyword, None)!r}); not part of a volume")
    return array


def _scalar(ds, keyword: str, default: Optional[float] = None) -> Optional[float]:
    """A single decimal string (``RescaleSlope``, ``SliceThickness``...) as a float, or ``default``."""
    try:
        values = _decimals(ds, keyword)
    except (TypeError, ValueError):  # UnicodeDecodeError is a ValueError
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


def _plane(
    path: Path, frame: Optional[int], sources: Tuple, size: Tuple[int, int], rescale: Tuple[float, float], where: str
):
    """One image plane: its position, orientation and spacing read from ``sources`` (the dataset, or an enhanced
    object's plane position, orientation and pixel measures items)."""
    position, orientation, measures = sources
    return Slice(
        path,
        frame,
        _vector(position, "ImagePositionPatient", 3, where),
        _vector(orientation, "ImageOrientationPatient", 6, where),
        _vector(measures, "PixelSpacing", 2, where),
        size,
        rescale,
        _scalar(measures, "SliceThickness"),
    )


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
        return [_plane(path, None, (ds, ds, ds), (rows, columns), (slope, intercept), where)]
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
        slices.append(_plane(path, f, (position, orientation, measures), (rows, columns), (slope, intercept), where))
    return slices
