"""Write a volume as a DICOM image series (CT or MR, single-frame files), e.g. to send a NIfTI volume to a
PACS, or to make test and benchmark series with a known geometry.

Voxel ``(i, j, k)`` of ``image`` is column ``i``, row ``j`` of slice ``k``, as :mod:`monai_ext.data.dicom`
reads it back; ``affine`` maps voxels to RAS millimetres (MONAI's and NIfTI's convention) and must be a
stack of parallel planes (orthogonal rows and columns; the slice axis may be tilted, as after gantry tilt).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

__all__ = ["write_dicom_series", "TRANSFER_SYNTAXES"]

#: short names for the transfer syntaxes :func:`write_dicom_series` can encode (``None``: explicit VR little endian)
TRANSFER_SYNTAXES = {
    "explicit": "1.2.840.10008.1.2.1",
    "rle": "1.2.840.10008.1.2.5",
    "jpeg-baseline": "1.2.840.10008.1.2.4.50",  # 8 bits
    "jpeg-lossless": "1.2.840.10008.1.2.4.70",  # process 14, selection value 1
    "jpeg-ls": "1.2.840.10008.1.2.4.80",
    "jpeg2000": "1.2.840.10008.1.2.4.90",
}


def write_dicom_series(
    image: np.ndarray,
    affine: np.ndarray,
    folder: Union[str, Path],
    modality: str = "CT",
    transfer_syntax: str = "explicit",
    series_description: str = "monai_ext series",
    series_number: int = 1,
    study_instance_uid: Optional[str] = None,
    series_instance_uid: Optional[str] = None,
    positions: Optional[Sequence[Sequence[float]]] = None,
    patient_id: str = "ANON",
    file_name: Callable[[int], str] = lambda k: f"IM{k + 1:04d}.dcm",
) -> list:
    """Write ``image`` ``(columns, rows, slices)`` (integers; CT values in HU are stored with intercept -1024)
    as one single-frame file per slice. ``positions`` overrides each slice's ImagePositionPatient (LPS), to
    write rounded or irregular positions. Returns the written paths, in slice order."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if transfer_syntax not in TRANSFER_SYNTAXES:
        raise ValueError(f"transfer_syntax must be one of {', '.join(TRANSFER_SYNTAXES)}, got {transfer_syntax!r}")
    syntax = UID(TRANSFER_SYNTAXES[transfer_syntax])
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)
    dx, dy = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    row, column = lps[:3, 0] / dx, lps[:3, 1] / dy
    pitch = float(np.dot(lps[:3, 2], np.cross(row, column)))
    intercept = -1024.0 if modality == "CT" else 0.0
    stored = np.asarray(image) - intercept
    bits = 8 if transfer_syntax == "jpeg-baseline" else 16
    if stored.min() < 0 or stored.max() >= 2**bits:
        raise ValueError(
            f"values {image.min()}..{image.max()} do not fit {bits}-bit unsigned pixels (after intercept {intercept})"
        )
    stored = stored.astype(np.uint8 if bits == 8 else np.uint16)
    sop_class = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4"}[modality]
    study = study_instance_uid or generate_uid()
    series = series_instance_uid or generate_uid()
    frame_of_reference = generate_uid()
    paths = []
    for k in range(stored.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID(sop_class)
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = UID(TRANSFER_SYNTAXES["explicit"])
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Synthetic^Volume", patient_id, "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = (
            modality,
            series_number,
            k + 1,
            series_description,
        )
        ds.Manufacturer, ds.PositionReferenceIndicator, ds.ImageType = "monai-ext", "", ["ORIGINAL", "PRIMARY", "AXIAL"]
        if modality == "CT":
            ds.KVP, ds.AcquisitionNumber = 120, 1
        else:
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "3D"
            ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength, ds.MagneticFieldStrength = 10, 500, 1, 1.5
        position = lps[:3, 3] + k * lps[:3, 2] if positions is None else np.asarray(positions[k], dtype=float)
        ds.ImagePositionPatient = [round(float(v), 6) for v in position]
        ds.ImageOrientationPatient = [round(float(v), 8) for v in (*row, *column)]
        ds.PixelSpacing = [round(float(dy), 8), round(float(dx), 8)]
        ds.SliceThickness = round(abs(pitch), 6)
        ds.SliceLocation = round(float(np.dot(position, np.cross(row, column))), 6)
        ds.PatientPosition = "HFS"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (
            bits,
            bits if bits == 8 else 12,
            bits - 1 if bits == 8 else 11,
            0,
        )
        if bits == 16 and stored.max() >= 4096:
            ds.BitsStored, ds.HighBit = 16, 15
        if modality == "CT":
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = intercept, 1, "HU"
        plane = np.ascontiguousarray(stored[:, :, k].T)  # (rows, columns)
        ds.PixelData = plane.tobytes()
        _encode(ds, plane, syntax)
        path = folder / file_name(k)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _encode(ds, plane: np.ndarray, syntax) -> None:
    from pydicom.encaps import encapsulate

    if syntax == TRANSFER_SYNTAXES["explicit"]:
        return
    if syntax in (TRANSFER_SYNTAXES["jpeg-baseline"], TRANSFER_SYNTAXES["jpeg-lossless"]):
        import imagecodecs  # pydicom encodes neither: libjpeg-turbo's encoder, as a scanner would

        lossless = syntax == TRANSFER_SYNTAXES["jpeg-lossless"]
        frame = imagecodecs.jpeg8_encode(
            plane,
            level=95,
            lossless=lossless,
            predictor=1 if lossless else None,
            bitspersample=int(ds.BitsStored) if lossless else None,
        )
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
        if not lossless:
            ds.LossyImageCompression, ds.LossyImageCompressionRatio, ds.LossyImageCompressionMethod = (
                "01",
                1.0,
                "ISO_10918_1",
            )
        return
    ds.compress(syntax, plane, encoding_plugin="pylibjpeg" if syntax == TRANSFER_SYNTAXES["jpeg2000"] else "")
