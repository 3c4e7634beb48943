"""Reading and writing volumes for the ``segment`` command: DICOM series, NIfTI, NRRD, MetaImage.

- :func:`find_cases` turns a path into cases: one file, one DICOM series folder, or a folder of both.
- :func:`read_volume` loads a case with MONAI's readers (ITK for DICOM series, NRRD and MetaImage; nibabel
  for NIfTI) as a channel-first ``MetaTensor`` whose affine is in RAS, the input's own orientation kept.
  A DICOM folder is checked first: one series, one orientation, evenly spaced slices.
- :func:`write_nifti` writes a label map with a given affine; :func:`write_dicom_seg` writes a DICOM
  Segmentation (highdicom) that references the source series. Both write to a temporary name in the
  output folder and rename, so no half-written file is ever left under the final name.

Every problem with an input raises :class:`InputError` with one line that names the file and the problem.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

__all__ = ["InputError", "Volume", "find_cases", "read_volume", "check_image", "is_dicom_folder", "write_atomically", "write_nifti", "write_dicom_seg", "VOLUME_SUFFIXES"]

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


class InputError(ValueError):
    """A bad input: the message names the file and the problem, in one line."""


@dataclass
class Volume:
    """A loaded case: the image ``(C, *spatial)`` with its RAS affine, and the DICOM headers if any."""

    path: Path
    image: "torch.Tensor"
    dicom: List = field(default_factory=list)  # pydicom datasets in slice order, for DICOM SEG

    @property
    def name(self) -> str:
        name = self.path.name
        for suffix in VOLUME_SUFFIXES:
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return name


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom_folder(path: Path) -> bool:
    return path.is_dir() and any(_is_dicom_file(p) for p in path.iterdir() if p.is_file())


def find_cases(path: Union[str, Path]) -> List[Path]:
    """The cases under ``path``: the file itself, the DICOM series folder itself, or every volume file
    and DICOM series folder directly inside a folder of cases (sorted)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file():
        return [path]
    if is_dicom_folder(path):
        return [path]
    cases = sorted(
        p for p in path.iterdir()
        if (p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES)) or (p.is_dir() and is_dicom_folder(p))
    )
    if not cases:
        raise InputError(f"{path}: no volumes found (NIfTI, NRRD, MetaImage files or DICOM series folders)")
    return cases


def scan_dicom_series(folder: Path) -> List:
    """The folder's DICOM headers in slice order, after checking it holds one evenly spaced volume."""
    import pydicom

    datasets = []
    for p in sorted(q for q in folder.iterdir() if q.is_file()):
        if not _is_dicom_file(p):
            continue
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception as e:  # pydicom raises many kinds
            raise InputError(f"{p}: unreadable DICOM file ({e})") from e
        ds.filename = str(p)
        datasets.append(ds)
    if not datasets:
        raise InputError(f"{folder}: no DICOM files")
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(series) > 1:
        raise InputError(f"{folder}: mixed DICOM series ({len(series)} SeriesInstanceUIDs); give one series per folder")
    for ds in datasets:
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            raise InputError(f"{ds.filename}: no ImagePositionPatient/ImageOrientationPatient; not part of a volume")
    orientation = np.array(datasets[0].ImageOrientationPatient, dtype=float)
    for ds in datasets[1:]:
        if not np.allclose(np.array(ds.ImageOrientationPatient, dtype=float), orientation, atol=1e-3):
            raise InputError(f"{folder}: slices with different orientations (e.g. {Path(ds.filename).name}); not one volume")
    normal = np.cross(orientation[:3], orientation[3:])
    datasets.sort(key=lambda ds: float(np.dot(np.array(ds.ImagePositionPatient, dtype=float), normal)))
    positions = np.array([np.dot(np.array(ds.ImagePositionPatient, dtype=float), normal) for ds in datasets])
    if len(positions) > 1:
        gaps = np.diff(positions)
        if np.any(gaps <= 1e-3):
            raise InputError(f"{folder}: two slices at the same position; duplicate or mixed acquisitions")
        if np.ptp(gaps) > max(0.01 * np.median(gaps), 1e-2):
            raise InputError(
                f"{folder}: unevenly spaced slices (gaps {np.round(gaps, 3).tolist()} mm); missing or stray slices"
            )
    return datasets


def read_volume(path: Union[str, Path], in_channels: Optional[int] = None, min_dims: int = 3, dicom_reader: str = "itk") -> Volume:
    """Load one case (see :func:`find_cases`) as a channel-first ``MetaTensor`` with a RAS affine.

    Args:
        path: a volume file or a DICOM series folder.
        in_channels: the channel count the network needs; another count is an error.
        min_dims: spatial dimensions required (3 for volumes; 2 also accepts images).
        dicom_reader: ``"itk"`` (MONAI's ITKReader) or ``"pydicom"`` (MONAI's PydicomReader) for DICOM series.

    Raises:
        InputError: missing or unreadable file, not a volume, wrong channel count, empty (constant) or
            non-finite intensities, or a DICOM folder that is not one evenly spaced series.
    """
    from monai.transforms import LoadImage

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if dicom_reader not in ("itk", "pydicom"):
        raise InputError(f"dicom_reader must be 'itk' or 'pydicom', got {dicom_reader!r}")
    dicom: List = []
    if path.is_dir():
        dicom = scan_dicom_series(path)
        reader = "ITKReader" if dicom_reader == "itk" else "PydicomReader"
    elif path.name.lower().endswith((".nii", ".nii.gz")):
        reader = "NibabelReader"
    else:
        reader = "ITKReader"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = LoadImage(reader=reader, image_only=True, ensure_channel_first=True)(str(path))
    except Exception as e:  # readers raise RuntimeError, OSError, ValueError, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: unreadable ({reason})") from e
    if dicom and not _first_slice_at(image, dicom[0]):
        # MONAI's PydicomReader stacks the slices in the opposite order: same geometry, reversed axis.
        # Keep one convention, slice k = the k-th header along the normal, which DICOM SEG frames rely on.
        from monai.transforms import Flip

        image = Flip(spatial_axis=image.dim() - 2)(image)
    check_image(path, image, in_channels, min_dims)
    return Volume(path=path, image=image, dicom=dicom)


def check_image(path: Union[str, Path], image, in_channels: Optional[int] = None, min_dims: int = 3) -> None:
    """Check a loaded channel-first image: a 2D/3D image with the network's channel count and finite,
    non-constant values.

    Raises:
        InputError: one line naming ``path`` and the problem.
    """
    spatial = image.dim() - 1
    if spatial < min_dims or spatial > 3:
        raise InputError(f"{path}: not a volume (shape {list(image.shape[1:])}; need {min_dims}D{' or 3D' if min_dims < 3 else ''})")
    if image.numel() == 0 or min(image.shape[1:]) < 1:
        raise InputError(f"{path}: empty image (shape {list(image.shape)})")
    if in_channels is not None and image.shape[0] != in_channels:
        raise InputError(f"{path}: wrong channel count: {image.shape[0]} channel(s), the network takes {in_channels}")
    data = image.as_tensor() if hasattr(image, "as_tensor") else image
    if not torch.isfinite(data).all():
        raise InputError(f"{path}: contains NaN or infinite values")
    if data.max() == data.min():
        raise InputError(f"{path}: empty volume (every voxel is {float(data.max()):g})")


def _first_slice_at(image, header) -> bool:
    """Whether voxel (0, 0, 0) of ``image`` (RAS affine) is the first pixel of the slice ``header`` describes."""
    origin = (image.affine.double() @ torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64))[:3].numpy()
    x, y, z = (float(v) for v in header.ImagePositionPatient)
    return bool(np.allclose(origin, [-x, -y, z], atol=1e-2))  # DICOM positions are LPS


def write_atomically(target: Path, write) -> Path:
    """Run ``write(temporary_path)`` in the target's folder, then rename it to ``target``: no half-written
    file ever has the target's name (a crash leaves the old file, or none)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp{''.join(target.suffixes)}")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def write_nifti(
    labels: Union[np.ndarray, torch.Tensor], affine: Union[np.ndarray, torch.Tensor], target: Union[str, Path], dtype=None
) -> Path:
    """Write an image ``(*spatial[, components])`` with the given RAS affine as NIfTI.

    ``dtype`` defaults to a label map's: uint8, or int16 past 255 labels.
    """
    import nibabel as nib

    data = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if dtype is None:
        dtype = np.uint8 if data.max(initial=0) <= 255 else np.int16
    data = data.astype(dtype)
    aff = affine.detach().cpu().numpy() if isinstance(affine, torch.Tensor) else np.asarray(affine)
    img = nib.Nifti1Image(data, aff.astype(np.float64))
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    return write_atomically(Path(target), lambda tmp: nib.save(img, str(tmp)))


def write_dicom_seg(
    labels: Union[np.ndarray, torch.Tensor],
    source: Sequence,
    class_names: Dict[int, str],
    target: Union[str, Path],
    algorithm: str = "monai_ext",
) -> Path:
    """Write a label map ``(X, Y, Z)`` on the source series' grid as a DICOM SEG referencing that series.

    ``source`` holds the series' headers in slice order (as :func:`read_volume` returns them); frame ``k``
    of the SEG is slice ``k``, transposed to DICOM's (rows, columns). One segment per foreground class in
    ``class_names``; empty segments are kept so that segment numbers equal label values.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    data = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if data.ndim != 3 or data.shape[2] != len(source):
        raise InputError(f"label map {list(data.shape)} does not match the {len(source)}-slice source series")
    frames = np.ascontiguousarray(np.transpose(data, (2, 1, 0)))  # (slices, rows, columns)
    datasets = [pydicom.dcmread(ds.filename) for ds in source]
    values = sorted(v for v in class_names if v > 0)
    if frames.shape[1:] != (datasets[0].Rows, datasets[0].Columns):
        raise InputError(f"label map slices {frames.shape[1:]} differ from the series' {datasets[0].Rows}x{datasets[0].Columns}")
    algorithm_id = hd.AlgorithmIdentificationSequence(name=algorithm, version="0.1.0", family=codes.cid7162.ArtificialIntelligence)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=class_names[v],
            segmented_property_category=codes.cid7150.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm_id,
        )
        for i, v in enumerate(values)
    ]
    pixel = np.zeros(frames.shape, dtype=np.uint8)
    for i, v in enumerate(values):
        pixel[frames == v] = i + 1
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=pixel,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="monai-ext",
        manufacturer_model_name=algorithm,
        software_versions="0.1.0",
        device_serial_number="0",
        omit_empty_frames=False,
    )
    return write_atomically(Path(target), lambda tmp: seg.save_as(str(tmp)))
