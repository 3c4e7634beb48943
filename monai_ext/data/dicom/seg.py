"""DICOM out: a label map on a source series' grid as a DICOM Segmentation (highdicom) or an RT Structure Set.

The SEG's geometry comes from the series geometry :mod:`monai_ext.data.dicom` fitted, not from header
fields copied from the source: the plane of every frame is its source slice's own position, and
``SpacingBetweenSlices`` is the fitted slice pitch (a header's ``SpacingBetweenSlices`` is often the gap
between slices, or stale). Segments carry the bundle's (trained) label names, coded with SNOMED CT where
DICOM's segmentation context groups know the name (CID 7151 anatomy, 7159 abnormal structures, 7166
tissues), else as ``Tissue``.

Both writers go through :func:`~monai_ext.atomic.write_atomically`: a temporary name, then rename.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, Tuple, Union

import numpy as np
import torch

from monai_ext.atomic import write_atomically
from monai_ext.data.volume_io import Volume
from monai_ext.errors import InputError

from .geometry import Geometry

__all__ = ["write_dicom_seg", "write_rtstruct", "coded_concepts"]

_ALIASES = {
    "grey matter": "GrayMatter",
    "gm": "GrayMatter",
    "wm": "WhiteMatter",
    "csf": "CerebrospinalFluid",
    "tumour": "Neoplasm",
    "tumor": "Neoplasm",
    "tumours": "Neoplasm",
    "tumors": "Neoplasm",
    "vessel": "BloodVessel",
    "vessels": "BloodVessel",
    "nuclei": "Nucleus",
    "lesions": "Lesion",
}


def coded_concepts(label: str) -> Tuple:
    """``(category, type)`` codes for a segment named ``label`` (e.g. 'liver' -> Anatomical Structure, Liver)."""
    from pydicom.sr.codedict import codes

    text = label.strip().lower().replace("_", " ").replace("-", " ")
    name = _ALIASES.get(text, "".join(w.capitalize() for w in re.split(r"\s+", text) if w))
    groups = (
        (codes.cid7159, codes.cid7150.MorphologicallyAbnormalStructure),
        (codes.cid7166, codes.cid7150.Tissue),
        (codes.cid7151, codes.cid7150.AnatomicalStructure),
    )
    for group, category in groups:
        if name in group.dir():
            return category, getattr(group, name)
    if name in codes.SCT.dir():
        return codes.cid7150.Tissue, getattr(codes.SCT, name)
    return codes.cid7150.Tissue, codes.SCT.Tissue


def _frames(labels, volume: Volume) -> Tuple[np.ndarray, Geometry]:
    """The label map's planes ``(slices, rows, columns)``, one per source slice, in the geometry's slice order."""
    geometry = volume.geometry
    if geometry is None or volume.series is None:
        raise InputError(f"{volume.path}: DICOM output needs a DICOM series as input")
    data = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if data.shape != geometry.shape:
        raise InputError(f"label map {list(data.shape)} does not match the series grid {list(geometry.shape)}")
    if geometry.planar:
        data = data[..., None]
    return np.ascontiguousarray(np.transpose(data[:, :, geometry.index], (2, 1, 0))), geometry


def write_dicom_seg(
    labels: Union[np.ndarray, torch.Tensor],
    volume: Volume,
    class_names: Dict[int, str],
    target: Union[str, Path],
    algorithm: str = "monai_ext",
    version: str = "0.1.0",
) -> Path:
    """Write a label map ``(columns, rows, slices)`` on a DICOM volume's grid as a binary DICOM SEG.

    One segment per foreground class in ``class_names`` (segment ``n`` is the ``n``-th label value; empty
    segments are kept so that segment numbers follow the label values); one frame per source slice and
    segment, each at its source slice's position and referencing it (multi-frame sources by frame).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    frames, geometry = _frames(labels, volume)
    values = sorted(v for v in class_names if v > 0)
    by_path = {h.filename: h for h in volume.series.headers}  # the headers the reader kept: highdicom needs no pixels
    sources = [by_path[p] for p in dict.fromkeys(str(s.path) for s in geometry.slices)]
    if len(sources) > 1 and any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in sources):
        raise InputError(
            f"{volume.path}: a series of several multi-frame objects; DICOM SEG output takes one multi-frame object "
            "or single frames"
        )
    first = geometry.slices[0]
    algorithm_id = hd.AlgorithmIdentificationSequence(
        name=algorithm, version=version, family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = []
    for number, value in enumerate(values, start=1):
        category, kind = coded_concepts(class_names[value])
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=class_names[value],
                segmented_property_category=category,
                segmented_property_type=kind,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm_id,
            )
        )
    pixel = np.zeros(frames.shape + (max(len(values), 1),), dtype=bool)
    for number, value in enumerate(values):
        pixel[..., number] = frames == value
    measures = hd.PixelMeasuresSequence(
        pixel_spacing=[float(v) for v in first.spacing],
        slice_thickness=float(first.thickness or geometry.pitch),
        spacing_between_slices=float(geometry.pitch),
    )
    # a projection image has no patient plane: the SEG takes the source image's pixel matrix as it is
    planes = (
        {}
        if geometry.planar
        else dict(
            pixel_measures=measures,
            plane_orientation=hd.PlaneOrientationSequence(
                coordinate_system="PATIENT", image_orientation=[float(v) for v in first.orientation]
            ),
            plane_positions=[
                hd.PlanePositionSequence(coordinate_system="PATIENT", image_position=[float(v) for v in s.position])
                for s in geometry.slices
            ],
        )
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixel[..., : len(values)] if values else pixel,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="monai-ext",
        manufacturer_model_name=algorithm,
        software_versions=version,
        device_serial_number="0",
        omit_empty_frames=False,
        series_description=f"{algorithm} segmentation",
        **planes,
    )
    if geometry.planar:  # the General Image module asks for it where there is no plane orientation (type 2C)
        seg.PatientOrientation = sources[0].get("PatientOrientation", "")
        shared = seg.SharedFunctionalGroupsSequence[0]
        if "PixelMeasuresSequence" in shared and "SliceThickness" not in shared.PixelMeasuresSequence[0]:
            del (
                shared.PixelMeasuresSequence
            )  # copied incomplete from a secondary capture; readers such as highdicom refuse it
    else:
        # highdicom copies the source's pixel measures where the pixel spacing agrees, stale SpacingBetweenSlices included
        shared = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        shared.SpacingBetweenSlices, shared.SliceThickness = (
            measures[0].SpacingBetweenSlices,
            measures[0].SliceThickness,
        )
    return write_atomically(Path(target), lambda tmp: seg.save_as(str(tmp)))


def write_rtstruct(
    labels: Union[np.ndarray, torch.Tensor],
    volume: Volume,
    class_names: Dict[int, str],
    target: Union[str, Path],
) -> Path:
    """Write a label map on a single-frame DICOM series' grid as an RT Structure Set, with ``rt-utils``: one
    ROI per foreground class that has voxels, contours traced on each source slice and referencing it."""
    import tempfile

    from rt_utils import RTStructBuilder

    frames, geometry = _frames(labels, volume)
    if any(s.frame is not None for s in geometry.slices):
        raise InputError(
            f"{volume.path}: RTSTRUCT output needs a series of single-frame images (radiotherapy planning CT or MR)"
        )
    with tempfile.TemporaryDirectory() as folder:  # rt-utils reads every file of a folder: give it this series only
        for k, s in enumerate(geometry.slices):
            os.symlink(Path(s.path).resolve(), Path(folder) / f"{k:05d}.dcm")
        builder = RTStructBuilder.create_new(dicom_series_path=folder)
    by_uid = {str(h.SOPInstanceUID): k for k, h in enumerate(_headers_in_order(volume, geometry))}
    index = [by_uid[str(ds.SOPInstanceUID)] for ds in builder.series_data]  # rt-utils' own slice order
    for value in sorted(v for v in class_names if v > 0):
        mask = np.transpose(frames[index] == value, (1, 2, 0))  # (rows, columns, slices)
        if mask.any():
            builder.add_roi(mask=mask, name=class_names[value])
    _place_contours(builder.ds, builder.series_data)
    _conform(builder.ds, builder.series_data[0])
    return write_atomically(Path(target), lambda tmp: builder.ds.save_as(str(tmp), enforce_file_format=True))


def _place_contours(ds, series_data) -> None:
    """Put every contour point where its pixel is. rt-utils maps pixel ``(x, y)`` of slice ``i`` with one matrix
    for the whole series, which scales ``x`` by the spacing between rows (wrong for non-square pixels) and
    places slice ``i`` at ``i`` times the first gap; here each point is mapped from its own slice's position
    with ``PixelSpacing`` as DICOM defines it (column spacing along a row)."""
    from rt_utils.image_helper import get_pixel_to_patient_transformation_matrix

    to_pixel = np.linalg.inv(get_pixel_to_patient_transformation_matrix(series_data).astype(np.float64))
    by_uid = {str(h.SOPInstanceUID): h for h in series_data}
    for roi in ds.get("ROIContourSequence", []):
        for contour in roi.get("ContourSequence", []):
            header = by_uid[str(contour.ContourImageSequence[0].ReferencedSOPInstanceUID)]
            points = np.array([float(v) for v in contour.ContourData]).reshape(-1, 3)
            pixels = (to_pixel @ np.c_[points, np.ones(len(points))].T)[:2].T  # (x: column, y: row)
            orientation = np.array([float(v) for v in header.ImageOrientationPatient])
            dy, dx = (float(v) for v in header.PixelSpacing)  # between rows, between columns
            origin = np.array([float(v) for v in header.ImagePositionPatient])
            placed = (
                origin + np.outer(pixels[:, 0] * dx, orientation[:3]) + np.outer(pixels[:, 1] * dy, orientation[3:])
            )
            contour.ContourData = placed.ravel().tolist()


def _conform(ds, source) -> None:
    """What rt-utils leaves out of the RT Structure Set IOD (dciodvfy's errors): contour coordinates as
    decimal strings of at most 16 characters, the Frame of Reference module and the type 2 attributes."""
    from pydicom.valuerep import DSfloat

    for roi in ds.get("ROIContourSequence", []):
        for contour in roi.get("ContourSequence", []):
            contour.ContourData = [DSfloat(float(v), auto_format=True) for v in contour.ContourData]
    ds.FrameOfReferenceUID = (
        source.get("FrameOfReferenceUID", None) or ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    )
    for keyword in (
        "AccessionNumber",
        "ReferringPhysicianName",
        "OperatorsName",
        "PositionReferenceIndicator",
        "StudyID",
        "PatientBirthDate",
        "PatientSex",
    ):
        if keyword not in ds:
            setattr(ds, keyword, source.get(keyword, ""))


def _headers_in_order(volume: Volume, geometry: Geometry):
    by_path = {h.filename: h for h in volume.series.headers}
    return [by_path[str(s.path)] for s in geometry.slices]
