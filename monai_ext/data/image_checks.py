"""Checks of an input image before anything is computed from it: each refuses, in one line naming the file,
what a reader would silently repair, misread or fail on late.

- :func:`check_file_kind`: the content is what the name says (a PNG renamed ``.nii`` is refused), and a
  NIfTI header holds what its voxels need, a real type, a usable spacing, and a qform and sform that readers
  agree on;
- :func:`check_image`: the loaded image has the channels and dimensions asked for, finite intensities on a
  scale a normalisation can use, and an invertible affine (:func:`check_affine`).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from monai_ext.errors import InputError, first_line

__all__ = ["check_image", "check_file_kind", "check_affine"]


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
        raise InputError(
            f"{path}: not a volume (shape {list(image.shape[1:])}; need {min_dims}D{' or 3D' if min_dims < 3 else ''})"
        )
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
        raise InputError(
            f"{path}: an intensity of {extreme:.3g}, beyond what normalisation can compute (|value| up to "
            f"{_LARGEST_INTENSITY:.0e}); a corrupt voxel or a wrong scale factor"
        )
    flat = data.reshape(-1)
    sample = flat[:: max(1, flat.numel() // 1_000_000)].double().cpu().numpy()
    q_low, q_high = np.percentile(sample, [0.5, 99.5])
    spread = q_high - q_low
    if spread > 0 and high - low > _OUTLIER_FACTOR * spread:
        raise InputError(
            f"{path}: an intensity of {extreme:.3g} where 99% of the voxels lie in {q_low:.4g}..{q_high:.4g}; normalising would "
            "make every other voxel equal (a corrupt voxel or a wrong scale factor)"
        )


# what a file's first bytes say it is, for a message when its name says otherwise
_SIGNATURES = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"NRRD", "an NRRD file"),
    (b"\x1f\x8b", "a gzip file"),
)


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
    expected = (
        "a NIfTI file"
        if name.endswith((".nii", ".nii.gz"))
        else "an NRRD file"
        if name.endswith((".nrrd", ".nhdr"))
        else "a MetaImage file"
        if name.endswith((".mha", ".mhd"))
        else None
    )
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
        raise InputError(
            f"{path}: degenerate affine (the header's voxel spacing is {zooms.tolist()}: zero or not finite)"
        )
    affines = {}
    for name in ("sform", "qform"):
        if int(header[f"{name}_code"]) > 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                affine = header.get_sform() if name == "sform" else header.get_qform()
            try:
                check_affine(path, affine, spatial)
            except InputError as e:
                raise InputError(
                    str(e).replace("degenerate affine (", f"degenerate affine (the header's {name}: ", 1)
                ) from e
            affines[name] = affine
    if len(affines) == 2:
        _check_qform_sform(path, header, affines["qform"], affines["sform"], spatial)
    if dtype.kind == "c":
        raise InputError(f"{path}: complex voxels ({dtype.name}); give a real image, e.g. the magnitude")
    shape = [int(n) for n in header["dim"][1 : max(dims, 1) + 1]]
    if any(n < 0 for n in shape):
        raise InputError(f"{path}: unreadable (negative dimensions {shape} in the header)")
    offset = max(
        int(header["vox_offset"]), int(getattr(header, "single_vox_offset", 352))
    )  # where readers start the voxels
    needed = offset + int(np.prod(shape, dtype=object)) * dtype.itemsize
    held = _nifti_bytes(path, needed) if compressed else path.stat().st_size
    if held < needed:
        raise InputError(
            f"{path}: unreadable (the header's {'x'.join(map(str, shape))} voxels of {dtype.name} need {needed:,} bytes; "
            f"the file holds {'at most ' if compressed and held > 0 and held != needed else ''}{held:,})"
        )


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
    raise InputError(
        f"{path}: its qform and sform place the image up to {apart:.1f} mm apart, and readers disagree on which to use "
        f"(nibabel and MONAI: the sform, code {int(header['sform_code'])}; ITK and the viewers built on it: the qform); "
        "make them equal, e.g. with fslorient -copysform2qform"
    )


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
        raise InputError(
            f"{path}: degenerate affine (voxel spacing {np.round(spacing, 6).tolist()}: a spacing of zero)"
        )
    if abs(np.linalg.det(linear / spacing)) < 1e-6:
        raise InputError(f"{path}: degenerate affine (its axes are not independent: determinant 0)")
