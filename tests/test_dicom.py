"""Reading DICOM series (``monai_ext.data.dicom``): geometry as the best converters check it, every pixel
decoded or a one-line error, compressed syntaxes, multi-frame objects, DICOMDIR, several series, and
non-image objects refused. References: ITK's series reader, pydicom's own decode, the files' own positions."""

import logging
import re
import shutil
from pathlib import Path

import itk
import numpy as np
import pydicom
import pydicom.data
import pytest
import torch

from monai_ext.data.dicom.export import TRANSFER_SYNTAXES, write_dicom_series
from monai_ext.data.volume_io import find_cases, read_volume
from monai_ext.errors import InputError

FILES = Path(pydicom.__file__).parent / "data" / "test_files"
DICOMDIR_TESTS = FILES / "dicomdirtests"
CT5N = DICOMDIR_TESTS / "98892001" / "CT5N"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _oblique_affine(pitch=7.0, spacing=(0.9375, 0.9375), degrees=20.0):
    """A RAS affine of an oblique stack (rotated about the left-right axis), like a tilted brain MR."""
    a = np.radians(degrees)
    rotation = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([spacing[0], spacing[1], pitch])
    affine[:3, 3] = [-60.0, -80.0, -20.0]
    return affine


def _ge_like_series(folder, jitter=0.05, slices=20, **kwargs):
    """20 oblique slices 7.0 mm apart whose positions are rounded and jittered by up to ``jitter`` mm, as
    real scanners write them (a GE 1.5 T brain series lies within 0.05 mm of its 7.0 mm grid)."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 800, size=(40, 36, slices)).astype(np.int16)
    affine = _oblique_affine()
    lps = LPS_TO_RAS @ affine
    normal = lps[:3, 2] / np.linalg.norm(lps[:3, 2])
    positions = [
        np.round(lps[:3, 3] + k * lps[:3, 2] + rng.uniform(-jitter, jitter) * normal, 2) for k in range(slices)
    ]
    write_dicom_series(image, affine, folder, modality="MR", positions=positions, **kwargs)
    return image, affine


def _itk_read(folder):
    """ITK's series reader: (columns, rows, slices) voxels and a RAS affine, as an independent reference."""
    names = itk.GDCMSeriesFileNames.New(Directory=str(folder))
    image = itk.imread(list(names.GetFileNames(names.GetSeriesUIDs()[0])))
    direction = np.array(image.GetDirection())
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(np.array(image.GetSpacing()))
    affine[:3, 3] = np.array(image.GetOrigin())
    return np.transpose(itk.array_from_image(image), (2, 1, 0)), LPS_TO_RAS @ affine


def test_a_real_ct_series_reads_as_itk_reads_it():
    volume = read_volume(CT5N)
    voxels, affine = _itk_read(CT5N)
    np.testing.assert_array_equal(volume.image[0].numpy(), voxels)
    np.testing.assert_allclose(volume.image.affine.numpy(), affine, atol=1e-4)
    assert volume.geometry.pitch == pytest.approx(2.5) and volume.geometry.shape == (16, 16, 5)


def test_rounded_slice_positions_are_accepted_on_the_fitted_grid(tmp_path):
    image, affine = _ge_like_series(tmp_path / "ge")
    volume = read_volume(tmp_path / "ge")
    assert volume.geometry.pitch == pytest.approx(7.0, abs=0.02) and volume.geometry.residual <= 0.1
    np.testing.assert_array_equal(volume.image[0].numpy(), image)
    np.testing.assert_allclose(volume.image.affine.numpy(), affine, atol=0.06)  # the first slice's rounding, at most


def test_a_slice_far_off_the_grid_is_refused_naming_it(tmp_path):
    image = np.random.default_rng(0).integers(0, 500, size=(16, 16, 8)).astype(np.int16)
    positions = [[0.0, 0.0, 2.5 * k + (1.0 if k == 5 else 0.0)] for k in range(8)]
    write_dicom_series(image, np.diag([-1.0, -1.0, 2.5, 1.0]), tmp_path, positions=positions)
    with pytest.raises(InputError, match=r"IM0006\.dcm lies 1\.000 mm off the 2\.500 mm slice grid"):
        read_volume(tmp_path)
    assert read_volume(tmp_path, slice_tolerance=1.5).image.shape[-1] == 8  # a looser tolerance, stated


def test_a_missing_slice_is_refused_or_interpolated_when_asked(tmp_path, caplog):
    image = np.random.default_rng(0).integers(0, 500, size=(16, 16, 8)).astype(np.int16)
    write_dicom_series(image, np.diag([-0.5, -0.5, 2.5, 1.0]), tmp_path)
    (tmp_path / "IM0004.dcm").unlink()
    with pytest.raises(
        InputError,
        match=r"1 missing slice\(s\): a 5\.000 mm gap between IM0003\.dcm and IM0005\.dcm where the pitch is 2\.500 mm",
    ):
        read_volume(tmp_path)
    with caplog.at_level(logging.WARNING):
        volume = read_volume(tmp_path, allow_gaps=True)
    assert "interpolated" in caplog.text
    data = volume.image[0].numpy()
    assert data.shape == (16, 16, 8) and volume.geometry.index == [0, 1, 2, 4, 5, 6, 7]
    np.testing.assert_array_equal(data[..., 4], image[..., 4])
    np.testing.assert_allclose(data[..., 3], (image[..., 2] + image[..., 4]) / 2.0)


def test_gantry_tilt_is_refused_naming_the_angle(tmp_path):
    image = np.random.default_rng(0).integers(0, 500, size=(16, 16, 6)).astype(np.int16)
    affine = np.diag([-0.5, -0.5, 2.5, 1.0])
    affine[1, 2] = 2.5 * np.tan(np.radians(15))  # each slice shifted along y: a tilted gantry
    write_dicom_series(image, affine, tmp_path)
    with pytest.raises(InputError, match=r"gantry tilt or a sheared stack, 15\.00 degrees.*refused"):
        read_volume(tmp_path)


def test_a_slice_without_pixel_data_or_truncated_is_refused_naming_the_file(tmp_path):
    image = np.random.default_rng(0).integers(0, 500, size=(16, 16, 6)).astype(np.int16)
    write_dicom_series(image, np.diag([-0.5, -0.5, 2.5, 1.0]), tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    ds = pydicom.dcmread(tmp_path / "a" / "IM0003.dcm")
    del ds.PixelData
    ds.save_as(tmp_path / "a" / "IM0003.dcm")
    with pytest.raises(InputError, match=r"IM0003\.dcm: no pixel data"):
        read_volume(tmp_path / "a")
    raw = (tmp_path / "b" / "IM0005.dcm").read_bytes()
    (tmp_path / "b" / "IM0005.dcm").write_bytes(raw[:-100])
    with pytest.raises(InputError, match=r"IM0005\.dcm: .*412.*512"):  # 412 bytes where 16x16 pixels need 512
        read_volume(tmp_path / "b")
    big = (
        np.random.default_rng(0).integers(0, 500, size=(64, 64, 4)).astype(np.int16)
    )  # pixel data read from its offset
    write_dicom_series(big, np.diag([-0.5, -0.5, 2.5, 1.0]), tmp_path / "c")
    raw = (tmp_path / "c" / "IM0002.dcm").read_bytes()
    (tmp_path / "c" / "IM0002.dcm").write_bytes(raw[:-1000])
    with pytest.raises(
        InputError, match=r"IM0002\.dcm: truncated: 7192 bytes of pixel data where 64x64x1 pixels need 8192"
    ):
        read_volume(tmp_path / "c")
    with pytest.raises(
        InputError, match=r"MR_truncated\.dcm: .*(decode|truncated|unreadable)"
    ):  # pydicom's real broken file
        read_volume(FILES / "MR_truncated.dcm")


@pytest.mark.parametrize("syntax", [s for s in TRANSFER_SYNTAXES if s != "explicit"])
def test_compressed_series_read_equal_to_uncompressed(tmp_path, syntax):
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(
        np.arange(64), np.arange(48), np.arange(4), indexing="ij"
    )  # JPEG 2000 needs 32+ pixels a side
    top = 255 if syntax == "jpeg-baseline" else 2500  # baseline JPEG holds 8 bits
    image = (-1024 + (x + y + 10 * z) * top / 150 + rng.integers(0, top // 50, size=x.shape)).astype(np.int16)
    affine = np.diag([-0.7, -0.7, 2.0, 1.0])
    write_dicom_series(image, affine, tmp_path / "plain")
    write_dicom_series(image, affine, tmp_path / syntax, transfer_syntax=syntax)
    assert pydicom.dcmread(next((tmp_path / syntax).iterdir())).file_meta.TransferSyntaxUID == TRANSFER_SYNTAXES[syntax]
    plain, packed = read_volume(tmp_path / "plain").image, read_volume(tmp_path / syntax).image
    if syntax == "jpeg-baseline":  # lossy: within the quantisation error
        assert np.abs(packed.numpy() - plain.numpy()).max() <= 8
    else:
        np.testing.assert_array_equal(packed.numpy(), plain.numpy())
    np.testing.assert_array_equal(packed.affine.numpy(), plain.affine.numpy())


def _with_geometry(name, folder, order=(3, 1, 0, 2, 4, 5, 9, 6, 8, 7)):
    """pydicom-data's enhanced MR (10 frames of a real scanner, in several transfer syntaxes) with the
    functional groups its test copies were stripped of: 64x64 pixels of 0.5 mm, frames 3 mm apart, oblique,
    stored in ``order`` (default: out of order, to be placed by position, not by frame number)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(pydicom.data.get_testdata_file(name))
    row, column = np.array([1.0, 0.0, 0.0]), np.array([0.0, np.cos(0.3), -np.sin(0.3)])
    normal = np.cross(row, column)
    orientation, measures = Dataset(), Dataset()
    orientation.ImageOrientationPatient = [*row, *column]
    measures.PixelSpacing, measures.SliceThickness, measures.SpacingBetweenSlices = [0.5, 0.5], 3.0, 3.0
    if "SpacingBetweenSlices" in ds:
        del ds.SpacingBetweenSlices  # the test copy's 1.2 mm, which the positions no longer say
    shared = Dataset()
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = Sequence([orientation]), Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in order:
        position, item = Dataset(), Dataset()
        position.ImagePositionPatient = [round(float(v), 4) for v in np.array([10.0, -20.0, 5.0]) + 3.0 * k * normal]
        item.PlanePositionSequence = Sequence([position])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    path = folder / name
    ds.save_as(path)
    return path


@pytest.mark.parametrize(
    "name",
    [
        "emri_small_jpeg_2k_lossless.dcm",
        "emri_small_RLE.dcm",
        "emri_small_jpeg_ls_lossless.dcm",
        "emri_small_big_endian.dcm",
    ],
)
def test_a_real_enhanced_mr_reads_equal_in_every_syntax(tmp_path, name):
    plain = read_volume(_with_geometry("emri_small.dcm", tmp_path))
    other = read_volume(_with_geometry(name, tmp_path))
    np.testing.assert_array_equal(other.image.numpy(), plain.image.numpy())
    np.testing.assert_allclose(other.image.affine.numpy(), plain.image.affine.numpy())


def test_a_multi_frame_object_is_placed_by_its_per_frame_positions(tmp_path):
    path = _with_geometry("emri_small.dcm", tmp_path)
    volume = read_volume(path)
    ds = pydicom.dcmread(path)
    assert volume.image.shape == (1, 64, 64, 10) and volume.geometry.pitch == pytest.approx(3.0, abs=1e-4)
    frames = ds.pixel_array  # pydicom's own decode: (frames, rows, columns)
    for k, s in zip(volume.geometry.index, volume.geometry.slices):
        position = ds.PerFrameFunctionalGroupsSequence[s.frame].PlanePositionSequence[0].ImagePositionPatient
        world = volume.image.affine.numpy() @ np.array([0.0, 0.0, k, 1.0])
        np.testing.assert_allclose(world[:3], LPS_TO_RAS[:3, :3] @ np.array(position, dtype=float), atol=1e-3)
        np.testing.assert_array_equal(volume.image[0, :, :, k].numpy(), frames[s.frame].T)
    with pytest.raises(InputError, match=r"emri_small\.dcm: a 10-frame object without per-frame geometry"):
        read_volume(pydicom.data.get_testdata_file("emri_small.dcm"))  # as shipped: no plane positions at all


def test_an_enhanced_ct_made_by_highdicom_reads_as_its_single_frames(tmp_path):
    import highdicom as hd

    image, affine = _ge_like_series(tmp_path / "single", slices=6)
    sources = [pydicom.dcmread(p) for p in sorted((tmp_path / "single").iterdir())]
    for ds in sources:  # highdicom's legacy converter takes CT
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.Modality = "CT"
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        sources, series_instance_uid=hd.UID(), series_number=2, sop_instance_uid=hd.UID(), instance_number=1
    )
    enhanced.save_as(tmp_path / "enhanced.dcm")
    multi = read_volume(tmp_path / "enhanced.dcm")
    np.testing.assert_array_equal(multi.image[0].numpy(), image)
    np.testing.assert_allclose(
        multi.image.affine.numpy(), read_volume(tmp_path / "single").image.affine.numpy(), atol=1e-6
    )


def test_several_series_are_listed_chosen_or_each_segmented(tmp_path):
    study = tmp_path / "study"  # one folder, two series, as a PACS export or a CD often holds them
    shutil.copytree(CT5N, study)
    _ge_like_series(study, series_description="T2 AX", series_number=7, file_name=lambda k: f"MR{k:03d}")
    with pytest.raises(
        InputError,
        match=r"study: 2 DICOM series; choose one with series=UID or segment each with each_series=True: "
        r".*\(#5 CT 'SmartScore - Gated 0.5 sec', 5 image\(s\)\); .*\(#7 MR 'T2 AX', 20 image\(s\)\)",
    ):
        find_cases(study)
    mr_uid = pydicom.dcmread(study / "MR000").SeriesInstanceUID
    (case,) = find_cases(study, series=mr_uid)
    assert read_volume(case).image.shape == (1, 40, 36, 20)
    cases = find_cases(study, each_series=True)
    assert [c.name for c in cases] == ["study_S5", "study_S7"]
    assert [read_volume(c).image.shape[-1] for c in cases] == [5, 20]
    with pytest.raises(InputError, match="no series 1.2.3; it holds"):
        find_cases(study, series="1.2.3")
    # a folder of series folders is a folder of cases, one per series folder
    shutil.copytree(CT5N, tmp_path / "cases" / "a")
    _ge_like_series(tmp_path / "cases" / "b")
    assert [c.name for c in find_cases(tmp_path / "cases")] == ["a", "b"]


def test_a_dicomdir_finds_its_series():
    ct5n_uid = pydicom.dcmread(next(CT5N.iterdir())).SeriesInstanceUID
    (case,) = find_cases(DICOMDIR_TESTS / "DICOMDIR", series=ct5n_uid)
    np.testing.assert_array_equal(read_volume(case).image.numpy(), read_volume(CT5N).image.numpy())
    with pytest.raises(InputError, match=r"13 DICOM series.*'Routine Brain'"):
        find_cases(DICOMDIR_TESTS)


@pytest.mark.parametrize(
    "name, kind",
    [
        ("liver.dcm", "Segmentation Storage (SEG)"),
        ("rtstruct.dcm", "RT Structure Set Storage"),
        ("test-SR.dcm", "Comprehensive SR Storage (SR)"),
        ("rtplan.dcm", "RT Plan Storage (RTPLAN)"),
        ("waveform_ecg.dcm", "12-lead ECG Waveform Storage (ECG)"),
    ],
)
def test_non_image_objects_are_refused_naming_what_they_are(tmp_path, name, kind):
    path = pydicom.data.get_testdata_file(name)
    with pytest.raises(
        InputError, match=rf"{re.escape(name)}: not an image: {re.escape(kind)}.*give the image series instead"
    ):
        read_volume(path)
    folder = tmp_path / "folder"  # in a folder beside a series, left out with a log line
    shutil.copytree(CT5N, folder)
    shutil.copy(path, folder / name)
    (case,) = find_cases(folder)
    assert len(case.series.headers) == 5


def test_a_presentation_state_is_refused(tmp_path):
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.11.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.Modality, ds.SeriesInstanceUID = "PR", pydicom.uid.generate_uid()
    ds.save_as(tmp_path / "pr.dcm", enforce_file_format=True)
    with pytest.raises(
        InputError, match=r"pr\.dcm: not an image: Grayscale Softcopy Presentation State Storage \(PR\)"
    ):
        read_volume(tmp_path / "pr.dcm")


def test_the_writer_and_the_reader_agree_with_itk_on_an_oblique_series(tmp_path):
    image, affine = _ge_like_series(tmp_path, jitter=0.0)
    voxels, itk_affine = _itk_read(tmp_path)
    np.testing.assert_array_equal(voxels, image)
    np.testing.assert_allclose(itk_affine, affine, atol=1e-3)
    np.testing.assert_allclose(read_volume(tmp_path).image.affine.numpy(), itk_affine, atol=1e-3)


@pytest.mark.parametrize("name", ["SC_rgb.dcm", "SC_rgb_jpeg_dcmtk.dcm", "US1_UNCR.dcm", "OBXXXX1A.dcm", "CR"])
def test_a_projection_image_reads_as_a_2d_image_with_its_pixel_spacing(name):
    """Radiographs, ultrasound and secondary captures have no patient plane: a 2D image, RGB where the
    pixels are colour (YBR and palette colour converted), as pydicom decodes it."""
    from pydicom.pixels import apply_color_lut

    path = (
        next((DICOMDIR_TESTS / "77654033" / "CR1").iterdir())
        if name == "CR"
        else Path(pydicom.data.get_testdata_file(name))
    )
    volume = read_volume(path, min_dims=2)
    ds = pydicom.dcmread(path)
    pixels = apply_color_lut(ds.pixel_array, ds) if ds.PhotometricInterpretation == "PALETTE COLOR" else ds.pixel_array
    expected = np.moveaxis(pixels, -1, 0).transpose(0, 2, 1) if pixels.ndim == 3 else pixels.T[None]
    np.testing.assert_allclose(
        volume.image.numpy(),
        expected * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0)),
        rtol=1e-6,
    )
    assert volume.geometry.planar and volume.image.affine.shape == (3, 3)
    with pytest.raises(InputError, match="not a volume"):
        read_volume(path)  # a 3D bundle needs a volume


def test_damaged_files_copies_and_two_volumes_in_one_series(tmp_path):
    (tmp_path / "noise.dcm").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(InputError, match=r"noise\.dcm: not a DICOM file"):
        read_volume(tmp_path / "noise.dcm")
    (tmp_path / "cut.dcm").write_bytes((FILES / "CT_small.dcm").read_bytes()[:300])  # the header cut short
    with pytest.raises(InputError, match=r"cut\.dcm: a damaged or truncated DICOM file"):
        read_volume(tmp_path / "cut.dcm")
    copies = tmp_path / "copies"  # the same instance twice (a file copied): read once
    shutil.copytree(CT5N, copies)
    first = sorted(copies.iterdir())[0]
    shutil.copy(first, copies / "copy_of_first")
    np.testing.assert_array_equal(read_volume(copies).image.numpy(), read_volume(CT5N).image.numpy())
    echoes = tmp_path / "echoes"  # two instances at every position (two echoes): not one volume
    shutil.copytree(CT5N, echoes)
    ds = pydicom.dcmread(first)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(echoes / "second_echo")
    with pytest.raises(InputError, match=r"lie at the same position .* several acquisitions, echoes or time points"):
        read_volume(echoes)


def test_voxels_keep_the_stored_integer_type_where_it_holds_the_rescaled_values(tmp_path):
    """CT in int16 as ITK reads it; float32 where a slope scales the values (and always through ``segment``,
    which hands the bundle what its LoadImaged would: float32)."""
    image = np.random.default_rng(0).integers(-1024, 3000, size=(16, 16, 4)).astype(np.int16)
    write_dicom_series(image, np.diag([-0.5, -0.5, 2.5, 1.0]), tmp_path / "ct")
    ct = read_volume(tmp_path / "ct").image
    assert ct.dtype == torch.int16
    np.testing.assert_array_equal(ct[0].numpy(), image)
    for p in (tmp_path / "ct").iterdir():
        ds = pydicom.dcmread(p)
        ds.RescaleSlope = 0.5
        ds.save_as(p)
    scaled = read_volume(tmp_path / "ct").image
    assert scaled.dtype == torch.float32
    np.testing.assert_allclose(scaled[0].numpy(), (image + 1024) * 0.5 - 1024)
