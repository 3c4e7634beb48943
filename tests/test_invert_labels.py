"""``InvertLabelsd``: a label map goes back onto the input's grid as MONAI's nearest-neighbour ``Invertd`` puts it,
voxel for voxel, and stays a uint8 label map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureTyped, Invertd, Orientationd, Resized, Spacingd

from monai_ext.transforms import InvertLabelsd
from monai_ext.transforms.invert import resample_nearest

torch.set_num_threads(1)


def _affine(axes, spacing, origin=(10.3, -4.1, 7.7)) -> torch.Tensor:
    """A voxel-to-world affine whose voxel axis ``i`` runs along world axis ``axes[i]`` with signed ``spacing[i]``."""
    a = torch.zeros(4, 4, dtype=torch.float64)
    for i, (axis, step) in enumerate(zip(axes, spacing)):
        a[axis, i] = step
    a[:3, 3] = torch.tensor(origin)
    a[3, 3] = 1
    return a


def _run(image: MetaTensor, transforms: list, padding_mode: str = "border"):
    pre = Compose([EnsureTyped(keys="image")] + transforms)
    data = pre({"image": image})
    generator = torch.Generator().manual_seed(0)
    data["pred"] = MetaTensor(
        torch.randint(0, 3, data["image"].shape, generator=generator, dtype=torch.uint8), affine=data["image"].affine
    )
    args = dict(keys="pred", transform=pre, orig_keys="image", nearest_interp=True, to_tensor=True)
    return Invertd(**args)(dict(data))["pred"], InvertLabelsd(**args)(dict(data))["pred"]


CASES = {
    "DICOM-like LPS CT to 1.5 mm": ((0, 1, 2), (-0.7, -0.7, 2.5), (120, 110, 40)),
    "flipped axes, coarser": ((0, 1, 2), (0.8, -0.9, -3.0), (97, 80, 31)),
    "permuted axes (sagittal acquisition)": ((2, 0, 1), (1.2, -0.9, 0.7), (30, 70, 64)),
    "already at the target spacing": ((0, 1, 2), (1.5, 1.5, 1.5), (40, 40, 40)),
}


@pytest.mark.parametrize("axes, spacing, shape", CASES.values(), ids=CASES.keys())
def test_labels_land_where_monai_puts_them_and_stay_uint8(axes, spacing, shape):
    image = MetaTensor(torch.randn(1, *shape), affine=_affine(axes, spacing))
    reference, ours = _run(
        image,
        [Orientationd(keys="image", axcodes="RAS"), Spacingd(keys="image", pixdim=(1.5, 1.5, 1.5), mode="bilinear")],
    )
    assert ours.dtype == torch.uint8 and reference.dtype == torch.float32
    assert ours.shape == reference.shape == (1, *shape)
    assert torch.equal(ours.as_tensor(), reference.as_tensor().to(torch.uint8))
    np.testing.assert_allclose(ours.affine.numpy(), image.affine.numpy(), atol=1e-6)
    assert ours.applied_operations == []


def test_2d_images_and_zero_padding():
    affine = _affine((0, 1, 2), (-0.6, 0.8, 1.0))[[0, 1, 3]][:, [0, 1, 3]]  # 3x3, as 2D readers give
    image = MetaTensor(torch.randn(1, 90, 70), affine=affine)
    reference, ours = _run(
        image,
        [Orientationd(keys="image", axcodes="RA"), Spacingd(keys="image", pixdim=(1.1, 1.3), padding_mode="zeros")],
    )
    assert ours.dtype == torch.uint8 and torch.equal(ours.as_tensor(), reference.as_tensor().to(torch.uint8))


def test_zero_padding_outside_the_source_grid():
    labels = torch.ones(1, 4, 4, dtype=torch.uint8)
    source = torch.eye(3, dtype=torch.float64)
    target = torch.tensor(
        [[1.0, 0, -2], [0, 1, 0], [0, 0, 1]], dtype=torch.float64
    )  # starts 2 voxels before the source
    out = resample_nearest(labels, source, target, (6, 4), "zeros")
    assert out[0, :2].sum() == 0 and (out[0, 2:] == 1).all()
    assert (resample_nearest(labels, source, target, (6, 4), "border") == 1).all()


def test_oblique_grids_and_resizing_go_to_monai():
    tilt = _affine((0, 1, 2), (1.0, 1.0, 1.0))
    tilt[:3, :3] = torch.tensor([[0.8, -0.6, 0], [0.6, 0.8, 0], [0, 0, 1.0]], dtype=torch.float64)
    image = MetaTensor(torch.randn(1, 30, 30, 8), affine=tilt)
    assert (
        resample_nearest(
            torch.zeros(1, 30, 30, 8, dtype=torch.uint8), torch.eye(4, dtype=torch.float64), tilt, (30, 30, 8)
        )
        is None
    )
    reference, ours = _run(
        image, [Orientationd(keys="image", axcodes="RAS"), Spacingd(keys="image", pixdim=(1.5, 1.5, 1.5))]
    )
    assert torch.equal(ours.as_tensor(), reference.as_tensor())  # MONAI's own result
    image = MetaTensor(torch.randn(1, 30, 30, 8), affine=_affine((0, 1, 2), (1.0, 1.0, 2.0)))
    reference, ours = _run(
        image,
        [Orientationd(keys="image", axcodes="RAS"), Resized(keys="image", spatial_size=(16, 16, 16), mode="nearest")],
    )
    assert torch.equal(ours.as_tensor(), reference.as_tensor())


def test_probabilities_go_to_monai():
    image = MetaTensor(torch.randn(1, 20, 20, 10), affine=_affine((0, 1, 2), (1.0, 1.0, 2.0)))
    pre = Compose([Spacingd(keys="image", pixdim=(1.5, 1.5, 1.5))])
    data = pre({"image": image})
    data["pred"] = MetaTensor(torch.rand(3, *data["image"].shape[1:]), affine=data["image"].affine)
    args = dict(keys="pred", transform=pre, orig_keys="image", nearest_interp=False)
    assert torch.equal(
        InvertLabelsd(**args)(dict(data))["pred"].as_tensor(), Invertd(**args)(dict(data))["pred"].as_tensor()
    )
