"""DICOM out (``monai_ext.data.dicom.seg``): every SEG and RTSTRUCT we write passes dciodvfy with zero errors,
reads back with highdicom, pydicom and rt-utils onto the source slices, takes its geometry from the fitted
series and its segments from the bundle's (trained) labels."""

import shutil

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from conftest import SMALL_3D
from test_dicom import CT5N, _ge_like_series

from monai_ext.apps import segment
from monai_ext.data.dicom.export import write_dicom_series
from monai_ext.data.dicom.seg import coded_concepts, write_dicom_seg, write_rtstruct
from monai_ext.data.volume_io import read_volume

NAMES = {0: "background", 1: "liver", 2: "lesion"}


def _labels(volume):
    """Two classes on the volume's grid: a bright half as 'liver', and a block of it as 'lesion'."""
    data = volume.image[0]
    labels = (data > data.float().median()).to(torch.int32)
    labels[: data.shape[0] // 3, : data.shape[1] // 3] *= 2
    return labels


def _seg_frames(path, volume):
    """The SEG read back by highdicom, as a label map on the volume's grid (slice k = grid slice k)."""
    seg = hd.seg.segread(path)
    uids = [h.SOPInstanceUID for h in volume.series.headers]
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, combine_segments=True, skip_overlap_checks=True
    )
    by_path = {str(s.path): k for s, k in zip(volume.geometry.slices, volume.geometry.index)}
    labels = np.zeros(volume.geometry.shape, dtype=np.int32)
    for frame, header in zip(frames, volume.series.headers):
        labels[:, :, by_path[header.filename]] = frame.T
    return seg, labels


def test_a_seg_of_a_real_ct_validates_and_reads_back_onto_the_source_slices(tmp_path, dciodvfy):
    volume = read_volume(CT5N)
    labels = _labels(volume)
    path = write_dicom_seg(labels, volume, NAMES, tmp_path / "seg.dcm", algorithm="unet", version="0.2.0")
    report = dciodvfy(path)
    assert "Segmentation" in report
    seg, back = _seg_frames(path, volume)
    np.testing.assert_array_equal(back, labels.numpy())
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "lesion"]
    liver, lesion = seg.SegmentSequence
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"  # SNOMED CT: Liver
    assert liver.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning == "Anatomical Structure"
    assert lesion.SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"  # Lesion
    assert lesion.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning == "Morphologically Abnormal Structure"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == volume.series.uid
    ds = pydicom.dcmread(path)
    assert ds.Modality == "SEG" and ds.NumberOfFrames == 2 * 5 and ds.ManufacturerModelName == "unet"


def test_the_seg_geometry_is_the_fitted_series_not_a_stale_header(tmp_path, dciodvfy):
    _ge_like_series(tmp_path / "ge")
    for p in (
        tmp_path / "ge"
    ).iterdir():  # a header field that disagrees with the slice positions, as seen on a real GE series
        ds = pydicom.dcmread(p)
        ds.SpacingBetweenSlices = 2.0
        ds.save_as(p)
    volume = read_volume(tmp_path / "ge")
    path = write_dicom_seg(_labels(volume), volume, NAMES, tmp_path / "seg.dcm")
    dciodvfy(path)
    measures = pydicom.dcmread(path).SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SpacingBetweenSlices) == pytest.approx(7.0, abs=0.02)
    assert [float(v) for v in measures.PixelSpacing] == pytest.approx([0.9375, 0.9375])
    np.testing.assert_array_equal(_seg_frames(path, volume)[1], _labels(volume).numpy())


def test_a_seg_of_a_series_with_an_interpolated_gap_references_only_the_real_slices(tmp_path, dciodvfy):
    image = np.random.default_rng(0).integers(0, 500, size=(32, 32, 6)).astype(np.int16)
    write_dicom_series(image, np.diag([-0.5, -0.5, 2.5, 1.0]), tmp_path / "gap")
    (tmp_path / "gap" / "IM0003.dcm").unlink()
    volume = read_volume(tmp_path / "gap", allow_gaps=True)
    labels = _labels(volume)
    path = write_dicom_seg(labels, volume, NAMES, tmp_path / "seg.dcm")
    dciodvfy(path)
    seg, back = _seg_frames(path, volume)
    assert pydicom.dcmread(path).NumberOfFrames == 2 * 5
    np.testing.assert_array_equal(back[..., volume.geometry.index], labels.numpy()[..., volume.geometry.index])


def test_a_seg_of_a_multi_frame_source_validates(tmp_path, dciodvfy):
    image, _ = _ge_like_series(tmp_path / "single", slices=6)
    sources = [pydicom.dcmread(p) for p in sorted((tmp_path / "single").iterdir())]
    for ds in sources:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.Modality = "CT"
    hd.legacy.LegacyConvertedEnhancedCTImage(
        sources, series_instance_uid=hd.UID(), series_number=2, sop_instance_uid=hd.UID(), instance_number=1
    ).save_as(tmp_path / "enhanced.dcm")
    volume = read_volume(tmp_path / "enhanced.dcm")
    labels = _labels(volume)
    path = write_dicom_seg(labels, volume, NAMES, tmp_path / "seg.dcm")
    dciodvfy(path)
    seg = hd.seg.segread(path)
    frames = seg.get_pixels_by_source_frame(
        source_sop_instance_uid=volume.series.headers[0].SOPInstanceUID,
        source_frame_numbers=[s.frame + 1 for s in volume.geometry.slices],
        combine_segments=True,
        skip_overlap_checks=True,
    )
    expected = np.stack([labels.numpy()[:, :, k].T for k in volume.geometry.index])
    np.testing.assert_array_equal(frames, expected)


def _fill_contours(ds, volume, name):
    """An RTSTRUCT ROI back to a mask on the volume's grid: each contour's points mapped to pixels of the slice
    it references (DICOM's definition: column spacing along a row), filled with OpenCV."""
    import cv2

    number = next(r.ROINumber for r in ds.StructureSetROISequence if r.ROIName == name)
    roi = next(r for r in ds.ROIContourSequence if r.ReferencedROINumber == number)
    by_uid = {h.SOPInstanceUID: h for h in volume.series.headers}
    grid = {str(s.path): k for s, k in zip(volume.geometry.slices, volume.geometry.index)}
    mask = np.zeros(volume.geometry.shape, dtype=bool)
    for contour in roi.ContourSequence:
        header = by_uid[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
        orientation = np.array(header.ImageOrientationPatient, dtype=float)
        dy, dx = (float(v) for v in header.PixelSpacing)
        offsets = np.array(contour.ContourData, dtype=float).reshape(-1, 3) - np.array(
            header.ImagePositionPatient, dtype=float
        )
        pixels = np.stack([offsets @ orientation[:3] / dx, offsets @ orientation[3:] / dy], axis=1)
        plane = np.zeros((header.Rows, header.Columns), dtype=np.uint8)
        cv2.fillPoly(plane, [np.rint(pixels).astype(np.int32)], 1)
        mask[:, :, grid[header.filename]] |= plane.T.astype(bool)
    return mask


def test_an_rtstruct_validates_and_its_contours_fill_back_to_the_mask(tmp_path, dciodvfy):
    image = np.zeros((48, 40, 5), dtype=np.int16)  # not square, and pixels of 0.6 x 0.9 mm
    image[10:30, 8:28, 1:4] = 200
    image[34:44, 12:20, 2:5] = 400
    write_dicom_series(image, np.diag([-0.6, -0.9, 3.0, 1.0]), tmp_path / "ct")
    volume = read_volume(tmp_path / "ct")
    labels = torch.as_tensor((image == 200) + 2 * (image == 400), dtype=torch.int32)
    path = write_rtstruct(labels, volume, NAMES, tmp_path / "rt.dcm")
    dciodvfy(path)
    ds = pydicom.dcmread(path)
    assert ds.Modality == "RTSTRUCT" and [r.ROIName for r in ds.StructureSetROISequence] == ["liver", "lesion"]
    assert (
        ds.ReferencedFrameOfReferenceSequence[0]
        .RTReferencedStudySequence[0]
        .RTReferencedSeriesSequence[0]
        .SeriesInstanceUID
        == volume.series.uid
    )
    for value, name in ((1, "liver"), (2, "lesion")):
        np.testing.assert_array_equal(_fill_contours(ds, volume, name), labels.numpy() == value)


@pytest.mark.parametrize("name", ["SC_rgb.dcm", "US1_UNCR.dcm", "CR"])
def test_a_seg_of_a_projection_image_validates(tmp_path, dciodvfy, name):
    path = (
        next((CT5N.parents[1] / "77654033" / "CR1").iterdir()) if name == "CR" else pydicom.data.get_testdata_file(name)
    )
    volume = read_volume(path, min_dims=2)
    labels = (volume.image[0] > volume.image[0].float().mean()).to(torch.int32)
    seg = write_dicom_seg(labels, volume, NAMES, tmp_path / "seg.dcm")
    dciodvfy(seg)
    frames = hd.seg.segread(seg).get_pixels_by_source_instance(
        source_sop_instance_uids=[volume.series.headers[0].SOPInstanceUID],
        combine_segments=True,
        skip_overlap_checks=True,
    )
    np.testing.assert_array_equal(frames[0].T, labels.numpy())


def test_coded_concepts_follow_the_dicom_context_groups():
    assert [c.meaning for c in coded_concepts("Grey matter")] == ["Anatomical Structure", "Gray Matter"]
    assert [c.meaning for c in coded_concepts("fat")] == ["Tissue", "Fat"]  # CID 7166, tissues
    assert [c.meaning for c in coded_concepts("spleen")] == ["Anatomical Structure", "Spleen"]
    assert [c.meaning for c in coded_concepts("tumour")] == ["Morphologically Abnormal Structure", "Neoplasm"]
    assert [c.meaning for c in coded_concepts("blob")] == ["Tissue", "Tissue"]  # unknown: the label carries the name


def test_segment_writes_seg_and_rtstruct_that_validate(random_unet_3d, tmp_path, dciodvfy):
    series = tmp_path / "ct"
    shutil.copytree(CT5N, series)
    (nifti,) = segment(random_unet_3d, series, tmp_path / "nii", device="cpu", overrides=SMALL_3D, progress=False)
    mask = np.asarray(nib.load(str(nifti.output)).dataobj)
    volume = read_volume(series)
    for output_format in ("dicom-seg", "rtstruct"):
        (result,) = segment(
            random_unet_3d,
            series,
            tmp_path / output_format,
            device="cpu",
            output_format=output_format,
            overrides=SMALL_3D,
            progress=False,
        )
        assert result.error is None and result.output.name == "ct_seg.dcm", result.error
        dciodvfy(result.output)
    np.testing.assert_array_equal(_seg_frames(tmp_path / "dicom-seg" / "ct_seg.dcm", volume)[1], mask)
