"""NIfTI header truth: which of qform and sform places the image (as nibabel and ITK read them), and masks
whose qform and sform are both the geometry they were made on."""

import itk
import nibabel as nib
import numpy as np
import pytest
import torch

from monai_ext.apps import segment
from monai_ext.data.image_checks import check_file_kind
from monai_ext.data.nifti import NiftiWriter, write_nifti
from monai_ext.errors import InputError

QFORM = np.diag([0.8, 0.8, 2.0, 1.0])


def _both(path, sform, sform_code, data=None):
    data = np.random.default_rng(0).normal(size=(20, 18, 12)).astype(np.float32) if data is None else data
    image = nib.Nifti1Image(data, None)
    image.set_qform(QFORM, code=1)
    image.set_sform(sform, code=sform_code)
    nib.save(image, str(path))
    return path


def _moved(shear=0.0):
    sform = QFORM.copy()
    sform[0, 3] = 10.0
    sform[0, 1] = shear
    return sform


@pytest.mark.parametrize("sform_code, shear", [(1, 0.0), (2, 0.0), (4, 0.0), (1, 0.3)])
def test_an_input_is_read_where_nibabel_and_itk_both_put_it_or_refused(tmp_path, sform_code, shear):
    path = _both(tmp_path / "qs.nii.gz", _moved(shear), sform_code)
    itk_origin = np.array(itk.imread(str(path)).GetOrigin()) * [-1, -1, 1]  # ITK's LPS origin, in RAS
    nibabel_origin = nib.load(str(path)).affine[:3, 3]
    if np.allclose(itk_origin, nibabel_origin, atol=1e-3):  # both readers take the sform: so do we
        check_file_kind(path)
    else:
        with pytest.raises(
            InputError, match=r"qs\.nii\.gz: its qform and sform place the image up to 1\d\.\d mm apart"
        ):
            check_file_kind(path)


def test_a_mask_has_the_geometry_it_was_made_on_as_both_qform_and_sform(tmp_path, unet_3d_with_settings):
    (tmp_path / "in").mkdir()
    source = _both(tmp_path / "in" / "qs.nii.gz", _moved(), 1)
    (result,) = segment(unet_3d_with_settings, source, tmp_path / "out", device="cpu", progress=False)
    assert result.error is None, result.error
    mask = nib.load(str(result.output))
    np.testing.assert_allclose(mask.get_sform(), _moved(), atol=1e-4)
    np.testing.assert_allclose(
        mask.get_qform(), _moved(), atol=1e-4
    )  # where ITK, reading the sform too, shows the input
    assert mask.shape == (20, 18, 12)


def test_a_2d_image_whose_unused_third_axis_is_zero_is_written_with_its_own_axes(tmp_path):
    affine = np.array(
        [[0.0, -0.7, 0.0, 12.0], [0.9, 0.0, 0.0, -4.0], [0.0, 0.0, 0.0, 30.0], [0.0, 0.0, 0.0, 1.0]]
    )  # third column 0
    labels = np.zeros((24, 16), np.uint8)
    labels[3:9, 4:7] = 1
    for written in (
        write_nifti(labels, affine, tmp_path / "a.nii.gz"),
        _with_monai_writer(labels, affine, tmp_path / "b.nii.gz"),
    ):
        mask = nib.load(str(written))
        np.testing.assert_array_equal(np.squeeze(np.asarray(mask.dataobj)), labels)
        for transform in (mask.get_sform(), mask.get_qform()):
            np.testing.assert_allclose(
                transform[:3, [0, 1, 3]], affine[:3, [0, 1, 3]], atol=1e-5
            )  # its own axes and origin
            np.testing.assert_allclose(
                np.abs(transform[:3, 2]), [0, 0, 1], atol=1e-5
            )  # the unused one: the plane's normal


def _with_monai_writer(labels, affine, path):
    writer = NiftiWriter()
    writer.set_data_array(torch.as_tensor(labels)[None], channel_dim=0)
    writer.set_metadata(
        {"affine": torch.as_tensor(affine), "original_affine": torch.as_tensor(affine), "spatial_shape": labels.shape},
        resample=True,
    )  # onto the same grid: a no-op
    writer.write(str(path))
    return path
