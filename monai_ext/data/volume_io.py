"""Reading volumes for the ``segment`` command: DICOM series, NIfTI, NRRD, MetaImage.

- :func:`find_cases` turns a path into cases: one file, one DICOM input (a series folder, a ``DICOMDIR``, a
  DICOM file; one series of it, or each), or a folder of such cases.
- :func:`read_volume` loads a case as a channel-first ``MetaTensor`` whose affine is in RAS, the input's
  own orientation kept: DICOM with :mod:`monai_ext.data.dicom` (geometry checked, decoded in parallel),
  NIfTI with nibabel, NRRD and MetaImage with ITK, each checked first (:mod:`monai_ext.data.image_checks`).

Writing is :mod:`monai_ext.data.nifti` (NIfTI) and :mod:`monai_ext.data.dicom.seg` (DICOM SEG, RTSTRUCT).

Every problem with an input raises :class:`InputError` with one line that names the file and the problem.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

import torch

from monai_ext.data.dicom import Geometry, Series, choose_series, find_series, is_dicom_input, read_series
from monai_ext.data.image_checks import check_file_kind, check_image
from monai_ext.errors import InputError, first_line

__all__ = ["Case", "Volume", "find_cases", "read_volume", "VOLUME_SUFFIXES"]

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in VOLUME_SUFFIXES + (".dcm",):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass
class Case:
    """One thing to segment: a volume file, or one series of a DICOM input; ``name`` names its outputs.

    ``error`` is set for a DICOM input inside a folder of cases that could not be turned into a series
    (the other cases go on)."""

    path: Path
    name: str
    series: Optional[Series] = None
    error: Optional[str] = None


@dataclass
class Volume:
    """A loaded case: the image ``(C, *spatial)`` with its RAS affine; for DICOM, the series and its geometry."""

    path: Path
    image: "torch.Tensor"
    name: str = ""
    series: Optional[Series] = None
    geometry: Optional[Geometry] = None

    def __post_init__(self) -> None:
        self.name = self.name or _stem(self.path)


def find_cases(path: Union[str, Path], series: Optional[str] = None, each_series: bool = False) -> List[Case]:
    """The cases under ``path``: the file itself, the DICOM input itself, or every volume file and DICOM
    input directly inside a folder of cases (sorted).

    A DICOM input with several series is one case per series with ``each_series`` (named
    ``<input>_S<series number>``), the series whose SeriesInstanceUID is ``series``, or an error that lists
    the series with their descriptions.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if is_dicom_input(path):
        return _dicom_cases(path, series, each_series)
    if path.is_file():
        if series is not None:
            raise InputError(f"{path}: series= selects a DICOM series, and this is not a DICOM input")
        return [Case(path, _stem(path))]
    cases: List[Case] = []
    for p in sorted(path.iterdir()):
        if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES):
            cases.append(Case(p, _stem(p)))
        elif p.is_dir() and is_dicom_input(p):
            try:
                cases.extend(_dicom_cases(p, series, each_series, missing_ok=series is not None))
            except InputError as e:
                cases.append(Case(p, p.name, error=str(e)))
    if not cases:
        what = f"DICOM series {series}" if series else "volumes (NIfTI, NRRD, MetaImage files or DICOM series folders)"
        raise InputError(f"{path}: no {what} found")
    return cases


def _dicom_cases(path: Path, uid: Optional[str], each_series: bool, missing_ok: bool = False) -> List[Case]:
    found = find_series(path)
    name = (
        _stem(path)
        if path.is_file() and path.name.upper() != "DICOMDIR"
        else (path.parent.name if path.is_file() else path.name)
    )
    if uid is not None and missing_ok and all(s.uid != uid for s in found):
        return []  # a folder of cases, only some of which hold the series asked for
    by_uid = {s.uid: s for s in found}
    chosen = [by_uid[u] for u in choose_series(str(path), {s.uid: s.summary() for s in found}, uid, each_series)]
    if len(chosen) == 1:
        return [Case(path, name, chosen[0])]
    numbers = [s.number for s in found]
    unique = None not in numbers and len(set(numbers)) == len(numbers)
    return [
        Case(path, f"{name}_S{s.number}" if unique else f"{name}_{re.sub(r'[^0-9A-Za-z.]', '_', s.uid)}", s)
        for s in found
    ]


def read_volume(
    case: Union[str, Path, Case],
    in_channels: Optional[int] = None,
    min_dims: int = 3,
    allow_gaps: bool = False,
    slice_tolerance: Optional[float] = None,
) -> Volume:
    """Load one case (see :func:`find_cases`) as a channel-first ``MetaTensor`` with a RAS affine.

    Args:
        case: a :class:`Case`, a volume file, or a DICOM input holding one series.
        in_channels: the channel count the network needs; another count is an error.
        min_dims: spatial dimensions required (3 for volumes; 2 also accepts images).
        allow_gaps: a DICOM series with missing slices is interpolated (with a warning), not refused.
        slice_tolerance: how far (mm) a DICOM slice may lie off the fitted slice grid
            (default :func:`monai_ext.data.dicom.default_tolerance`).

    Raises:
        InputError: missing or unreadable file, not a volume, wrong channel count, empty (constant) or
            non-finite intensities, or a DICOM input that is not one regular series.
    """
    if not isinstance(case, Case):
        path = Path(case)
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        (case,) = find_cases(path) if is_dicom_input(path) else [Case(path, _stem(path))]
    if case.error:
        raise InputError(case.error)
    path = case.path
    if case.series is not None:
        image, geometry = read_series(case.series, slice_tolerance, allow_gaps)
        check_image(path, image, in_channels, min_dims)
        return Volume(path, image, case.name, case.series, geometry)
    if path.is_dir():
        raise InputError(
            f"{path}: a folder without DICOM files directly inside; give a volume file or a DICOM series folder"
        )
    check_file_kind(path)
    reader = "NibabelReader" if path.name.lower().endswith((".nii", ".nii.gz")) else "ITKReader"
    image = _load(path, reader)
    check_image(path, image, in_channels, min_dims)
    return Volume(path, image, case.name)


def _load(path: Path, reader: str):
    from monai.transforms import LoadImage

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return LoadImage(reader=reader, image_only=True, ensure_channel_first=True)(str(path))
    except Exception as e:  # readers raise RuntimeError, OSError, ValueError, ...
        raise InputError(f"{path}: unreadable ({first_line(e)})") from e
