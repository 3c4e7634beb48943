"""Reading and writing volumes for the ``segment`` command: DICOM series, NIfTI, NRRD, MetaImage.

- :func:`find_cases` turns a path into cases: one file, one DICOM input (a series folder, a ``DICOMDIR``, a
  DICOM file; one series of it, or each), or a folder of such cases.
- :func:`read_volume` loads a case as a channel-first ``MetaTensor`` whose affine is in RAS, the input's
  own orientation kept: DICOM with :mod:`monai_ext.data.dicom` (geometry checked, decoded in parallel),
  NIfTI with nibabel, NRRD and MetaImage with ITK.
- :func:`write_nifti` writes a label map with a given affine, to a temporary name in the output folder
  and then renamed, so no half-written file is ever left under the final name; the DICOM writers are in
  :mod:`monai_ext.data.dicom_seg`.

Every problem with an input raises :class:`InputError` with one line that names the file and the problem.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import numpy as np
import torch

from monai_ext.data.dicom import Geometry, Series, find_series, is_dicom_file, read_series
from monai_ext.errors import InputError, first_line

__all__ = ["InputError", "Case", "Volume", "find_cases", "read_volume", "check_image", "is_dicom_input", "write_atomically", "stale_temporaries", "write_nifti", "check_file_kind", "check_affine",
           "VOLUME_SUFFIXES"]

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


def is_dicom_input(path: Path) -> bool:
    """A DICOM file (``DICOMDIR`` included), or a folder with a DICOM file or a ``DICOMDIR`` directly inside."""
    if path.is_file():
        return is_dicom_file(path)
    return path.is_dir() and any(p.is_file() and is_dicom_file(p) for p in path.iterdir())


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
            raise InputError(f"{path}: --series selects a DICOM series, and this is not a DICOM input")
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
    name = _stem(path) if path.is_file() and path.name.upper() != "DICOMDIR" else (path.parent.name if path.is_file() else path.name)
    listing = "; ".join(s.summary() for s in found)
    if uid is not None:
        chosen = [s for s in found if s.uid == uid]
        if not chosen:
            if missing_ok:
                return []
            raise InputError(f"{path}: no series {uid}; it holds {listing}")
        return [Case(path, name, chosen[0])]
    if len(found) == 1:
        return [Case(path, name, found[0])]
    if not each_series:
        raise InputError(f"{path}: {len(found)} DICOM series; choose one with --series UID or segment each with --each-series: {listing}")
    numbers = [s.number for s in found]
    unique = None not in numbers and len(set(numbers)) == len(numbers)
    return [Case(path, f"{name}_S{s.number}" if unique else f"{name}_{re.sub(r'[^0-9A-Za-z.]', '_', s.uid)}", s) for s in found]


def read_volume(case: Union[str, Path, Case], in_channels: Optional[int] = None, min_dims: int = 3, allow_gaps: bool = False,
                slice_tolerance: Optional[float] = None) -> Volume:
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
        raise InputError(f"{path}: a folder without DICOM files directly inside; give a volume file or a DICOM series folder")
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


def check_image(path: Union[str, Path], image, in_channels: Optional[int] = None, min_dims: int = 3) -> None:
    """Check a loaded channel-first image: a 2D/3D image with the network's channel count and finite,
    non-constant values.

    Raises:
        InputError: one line naming ``path`` and the problem.
    """
    spatial = image.dim() - 1
    if image.numel() == 0:
        raise InputError(f"{path}: empty image (shape {list(image.shape)}: no voxels)")
    if spatial < min_dims or spatial > 3:
        raise InputError(f"{path}: not a volume (shape {list(image.shape[1:])}; need {min_dims}D{' or 3D' if min_dims < 3 else ''})")
    if in_channels is not None and image.shape[0] != in_channels:
        raise InputError(f"{path}: wrong channel count: {image.shape[0]} channel(s), the network takes {in_channels}")
    data = image.as_tensor() if hasattr(image, "as_tensor") else image
    # one pass, in memory order (a transposed view is read as stored): min and max propagate NaN and are
    # infinite where any value is, so finite extremes mean finite values
    order = sorted(range(data.dim()), key=lambda d: -data.stride(d))
    low, high = torch.aminmax(data.permute(order))
    if not (torch.isfinite(low) and torch.isfinite(high)):
        raise InputError(f"{path}: contains NaN or infinite values")
    if low == high:
        raise InputError(f"{path}: empty volume (every voxel is {float(high):g})")
    _check_range(path, data, float(low), float(high))
    if hasattr(image, "affine"):
        check_affine(path, image.affine, spatial)


# float32 statistics square the intensities: beyond this a variance overflows and z-scoring gives zeros
_LARGEST_INTENSITY = 1e18
# an intensity this many robust ranges outside them leaves every other voxel within 1e-6 after normalisation
_OUTLIER_FACTOR = 1e6


def _check_range(path: Union[str, Path], data: torch.Tensor, low: float, high: float) -> None:
    """Refuse intensities that would flatten normalisation: one value so extreme (3e38 among values of order 1)
    that after z-scoring or min-max scaling every other voxel is the same number."""
    extreme = high if abs(high) >= abs(low) else low
    if abs(extreme) > _LARGEST_INTENSITY:
        raise InputError(f"{path}: an intensity of {extreme:.3g}, beyond what normalisation can compute (|value| up to "
                         f"{_LARGEST_INTENSITY:.0e}); a corrupt voxel or a wrong scale factor")
    flat = data.reshape(-1)
    sample = flat[:: max(1, flat.numel() // 1_000_000)].double().cpu().numpy()
    q_low, q_high = np.percentile(sample, [0.5, 99.5])
    spread = q_high - q_low
    if spread > 0 and high - low > _OUTLIER_FACTOR * spread:
        raise InputError(f"{path}: an intensity of {extreme:.3g} where 99% of the voxels lie in {q_low:.4g}..{q_high:.4g}; normalising would "
                         "make every other voxel equal (a corrupt voxel or a wrong scale factor)")


TEMPORARY_PREFIX = "."
TEMPORARY_MARK = ".tmp"


def temporary_name(target: Path) -> Path:
    """Where :func:`write_atomically` writes ``target`` first: ``.<name>.<pid>.tmp<suffixes>`` beside it."""
    return target.with_name(f"{TEMPORARY_PREFIX}{target.name}.{os.getpid()}{TEMPORARY_MARK}{''.join(target.suffixes)}")


# what a file's first bytes say it is, for a message when its name says otherwise
_SIGNATURES = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"),
               (b"GIF8", "a GIF image"), (b"BM", "a BMP image"), (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"),
               (b"NRRD", "an NRRD file"), (b"\x1f\x8b", "a gzip file"))


def _looks_like(head: bytes) -> str:
    if head[128:132] == b"DICM":
        return "a DICOM file"
    if head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] in (b"n+2\x00", b"ni2\x00"):
        return "a NIfTI file"
    for magic, what in _SIGNATURES:
        if head.startswith(magic):
            return what
    if b"ObjectType" in head[:1024] or b"NDims" in head[:1024]:
        return "a MetaImage file"
    return ""


def check_file_kind(path: Union[str, Path]) -> None:
    """Check that a volume file's content is what its name says (NIfTI, NRRD, MetaImage), so that a PNG
    renamed ``.nii`` is refused rather than read by a reader that takes anything (with an identity affine).

    Raises:
        InputError: one line naming the file, what its name says and what its content is.
    """
    import gzip

    path = Path(path)
    name = path.name.lower()
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
        if name.endswith(".gz") and head.startswith(b"\x1f\x8b"):
            with gzip.open(path, "rb") as f:
                head = f.read(1024)
    except (OSError, EOFError) as e:
        raise InputError(f"{path}: unreadable ({getattr(e, 'strerror', None) or e})") from e
    expected = ("a NIfTI file" if name.endswith((".nii", ".nii.gz")) else "an NRRD file" if name.endswith((".nrrd", ".nhdr"))
                else "a MetaImage file" if name.endswith((".mha", ".mhd")) else None)
    if expected is None:
        return
    found = _looks_like(head)
    if found != expected:
        what = f"it is {found}" if found else ("it is empty" if not head else "its header is not one")
        raise InputError(f"{path}: not {expected} ({what})")
    if expected == "a NIfTI file":
        _check_nifti_header(path)


def _check_nifti_header(path: Path) -> None:
    """Refuse, from the header alone, what readers silently repair or cannot read:

    - a zero or non-finite voxel spacing (nibabel sets it to 1), an sform or qform that is not finite or not
      invertible (MONAI's reader falls back to the spacing alone): the mask would be written on another grid;
    - a qform and an sform that disagree where readers differ on which to use (:func:`_check_qform_sform`);
    - complex voxels (a network takes real intensities; which part is meant is not for us to guess);
    - dimensions the file cannot hold, before anything is allocated (a 720-byte file claiming 2 GiB).
    """
    import gzip

    import nibabel as nib

    compressed = path.name.lower().endswith(".gz")
    try:
        with (gzip.open if compressed else open)(path, "rb") as f:
            head = f.read(544)
        kind = nib.Nifti2Header if head[4:8] in (b"n+2\x00", b"ni2\x00") else nib.Nifti1Header
        header = kind.from_fileobj(io.BytesIO(head), check=False)  # as stored: nibabel's checks would repair it
        dtype = header.get_data_dtype()
    except Exception as e:  # nibabel raises several kinds for damaged headers
        raise InputError(f"{path}: unreadable ({first_line(e)})") from e
    dims = int(header["dim"][0])
    spatial = min(max(dims, 1), 3)
    zooms = np.asarray(header["pixdim"][1 : spatial + 1], dtype=np.float64)
    if not np.isfinite(zooms).all() or (zooms == 0).any():
        raise InputError(f"{path}: degenerate affine (the header's voxel spacing is {zooms.tolist()}: zero or not finite)")
    affines = {}
    for name in ("sform", "qform"):
        if int(header[f"{name}_code"]) > 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                affine = header.get_sform() if name == "sform" else header.get_qform()
            try:
                check_affine(path, affine, spatial)
            except InputError as e:
                raise InputError(str(e).replace("degenerate affine (", f"degenerate affine (the header's {name}: ", 1)) from e
            affines[name] = affine
    if len(affines) == 2:
        _check_qform_sform(path, header, affines["qform"], affines["sform"], spatial)
    if dtype.kind == "c":
        raise InputError(f"{path}: complex voxels ({dtype.name}); give a real image, e.g. the magnitude")
    shape = [int(n) for n in header["dim"][1 : max(dims, 1) + 1]]
    if any(n < 0 for n in shape):
        raise InputError(f"{path}: unreadable (negative dimensions {shape} in the header)")
    offset = max(int(header["vox_offset"]), int(getattr(header, "single_vox_offset", 352)))  # where readers start the voxels
    needed = offset + int(np.prod(shape, dtype=object)) * dtype.itemsize
    held = _nifti_bytes(path, needed) if compressed else path.stat().st_size
    if held < needed:
        raise InputError(f"{path}: unreadable (the header's {'x'.join(map(str, shape))} voxels of {dtype.name} need {needed:,} bytes; "
                         f"the file holds {'at most ' if compressed and held > 0 and held != needed else ''}{held:,})")


# deflate never compresses by more than 1032:1 (RFC 1951: 258-byte matches from 2-bit codes, at best)
_DEFLATE_MAX_RATIO = 1032


def _nifti_bytes(path: Path, needed: int) -> int:
    """How many bytes a gzipped file holds uncompressed, or enough of a bound to tell that it holds fewer
    than ``needed``; never holds more than a chunk in memory."""
    import gzip
    import zlib

    size = path.stat().st_size
    if size * _DEFLATE_MAX_RATIO < needed:
        return size * _DEFLATE_MAX_RATIO
    with open(path, "rb") as f:  # gzip's trailer: the last member's length, modulo 2^32
        f.seek(max(0, size - 4))
        trailer = int.from_bytes(f.read(4), "little")
    if needed < 2**32 and trailer >= needed:
        return trailer
    held = 0
    try:
        with gzip.open(path, "rb") as f:  # several members, or past 4 GiB: count (up to what is needed)
            while held < needed:
                chunk = f.read(1 << 22)
                if not chunk:
                    break
                held += len(chunk)
    except (OSError, EOFError, zlib.error):
        pass  # a damaged stream: what was read is what it holds
    return held


def _itk_reads_sform(header, sform: np.ndarray) -> bool:
    """ITK's NIfTI reader takes the sform over the qform only when its code is 1 (scanner) and its axes are
    orthogonal (checked against ITK 5.4: codes 2 and 4, or a sheared sform, give the qform)."""
    if int(header["sform_code"]) != 1:
        return False
    axes = sform[:3, :3] / np.linalg.norm(sform[:3, :3], axis=0)
    return bool(np.allclose(axes.T @ axes, np.eye(3), atol=1e-4))


def _check_qform_sform(path: Path, header, qform: np.ndarray, sform: np.ndarray, spatial: int) -> None:
    """Both transforms set and different: nibabel (and MONAI's NIfTI reader) use the sform. Where ITK does
    too, so do we (and the mask gets it as both); where ITK would use the qform, the image is shown in two
    places depending on the program, and any mask we wrote would be wrong in one of them: refused."""
    shape = [max(int(n), 1) for n in header["dim"][1:4]]
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij")).reshape(3, -1)
    apart = float(np.abs((qform[:3, :3] - sform[:3, :3]) @ corners + (qform[:3, 3:] - sform[:3, 3:])).max())
    if apart <= 1e-3 or _itk_reads_sform(header, sform):
        return
    raise InputError(f"{path}: its qform and sform place the image up to {apart:.1f} mm apart, and readers disagree on which to use "
                     f"(nibabel and MONAI: the sform, code {int(header['sform_code'])}; ITK and the viewers built on it: the qform); "
                     "make them equal, e.g. with fslorient -copysform2qform")


def check_affine(path: Union[str, Path], affine, spatial_dims: int) -> None:
    """Refuse a degenerate affine: non-finite entries, or a spatial part without an inverse (a zero
    spacing, collinear axes); no geometry could be kept for such an image.

    Raises:
        InputError: one line naming the file and what is wrong.
    """
    a = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    if not np.isfinite(a).all():
        raise InputError(f"{path}: degenerate affine (it holds NaN or infinite values)")
    d = min(spatial_dims, a.shape[0] - 1)
    linear = a[:d, :d]
    spacing = np.linalg.norm(linear, axis=0)
    if (spacing <= 1e-6).any():
        raise InputError(f"{path}: degenerate affine (voxel spacing {np.round(spacing, 6).tolist()}: a spacing of zero)")
    if abs(np.linalg.det(linear / spacing)) < 1e-6:
        raise InputError(f"{path}: degenerate affine (its axes are not independent: determinant 0)")


def write_atomically(target: Path, write) -> Path:
    """Run ``write(temporary_path)`` in the target's folder, flush it to disk (fsync), then rename it to
    ``target`` and flush the folder: no half-written file ever has the target's name (a crash or a full
    disk leaves the old file, or none), and a power loss after the return keeps the new one.

    Raises:
        OSError: with ``filename`` the target, when the file cannot be written.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(target)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_folder(target.parent)
    except OSError as e:  # a full disk, a read-only folder: name the file meant, not the temporary one
        raise OSError(e.errno, e.strerror or str(e), str(target)) from e
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def stale_temporaries(folder: Path) -> List[Path]:
    """Temporary files of :func:`write_atomically` in ``folder`` left by processes that no longer run
    (a killed run); a running process's own are not listed."""
    pattern = re.compile(rf"^{re.escape(TEMPORARY_PREFIX)}.+\.(\d+){re.escape(TEMPORARY_MARK)}(\..*)?$")
    stale = []
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        m = pattern.match(p.name)
        if m and p.is_file() and not _running(int(m.group(1))):
            stale.append(p)
    return stale


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not every platform opens folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
        normal = np.cross(*rest) if axis == 2 else np.cross(rest[1], rest[0]) if axis == 1 else np.cross(rest[0], rest[1])
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
    labels: Union[np.ndarray, torch.Tensor], affine: Union[np.ndarray, torch.Tensor], target: Union[str, Path], dtype=None,
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
