"""The synthetic data set: reproducible, split cleanly, and not solvable by thresholding."""

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from monai_ext.data import SYNTHETIC_LABELS, make_synthetic_dataset, synthetic_case


def test_same_seed_same_data_and_clean_split(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", num_cases=10, size=(32, 32), seed=3)
    b = make_synthetic_dataset(tmp_path / "b", num_cases=10, size=(32, 32), seed=3)
    da, db = json.loads(a.read_text()), json.loads(b.read_text())
    assert da == db
    for case in da["training"]:
        assert np.array_equal(
            nib.load(str(a.parent / case["image"])).get_fdata(), nib.load(str(b.parent / case["image"])).get_fdata()
        )
    images = [c["image"] for split in ("training", "validation", "test") for c in da[split]]
    assert len(images) == len(set(images)) == 10
    assert all(len(da[split]) >= 1 for split in ("training", "validation", "test"))
    assert da["labels"] == SYNTHETIC_LABELS
    c = make_synthetic_dataset(tmp_path / "c", num_cases=10, size=(32, 32), seed=4)
    assert json.loads(c.read_text())["training"] != da["training"] or not np.array_equal(
        nib.load(str(c.parent / da["training"][0]["image"])).get_fdata(),
        nib.load(str(a.parent / da["training"][0]["image"])).get_fdata(),
    )


def test_formats_and_geometry(tmp_path):
    png = make_synthetic_dataset(tmp_path / "png", num_cases=3, size=(40, 30), image_format="png")
    case = json.loads(png.read_text())["training"][0]
    image, label = np.array(Image.open(png.parent / case["image"])), np.array(Image.open(png.parent / case["label"]))
    assert image.shape == label.shape == (40, 30) and image.dtype == np.uint8
    assert set(np.unique(label)) <= {0, 1, 2}
    vol = make_synthetic_dataset(
        tmp_path / "vol", num_cases=3, spatial_dims=3, size=(20, 18, 16), spacing=(0.8, 0.8, 2.0)
    )
    case = json.loads(vol.read_text())["test"][0]
    img = nib.load(str(vol.parent / case["image"]))
    assert img.shape == (20, 18, 16) and np.allclose(np.diag(img.affine)[:3], (0.8, 0.8, 2.0))


def test_every_class_present_and_intensities_overlap():
    rng = np.random.default_rng(0)
    oracle = []
    for _ in range(5):
        image, label = synthetic_case((96, 96), rng)
        assert set(np.unique(label)) == {0, 1, 2}
        # the best pair of thresholds for this very image, chosen knowing the answer
        best = 0.0
        for lo in np.linspace(0.1, 1.0, 19):
            for hi in np.linspace(lo, 1.4, 15):
                pred = np.where(image > hi, 1, np.where(image > lo, 2, 0))
                dice = [
                    2 * np.sum((pred == c) & (label == c)) / max(1, np.sum(pred == c) + np.sum(label == c))
                    for c in (1, 2)
                ]
                best = max(best, float(np.mean(dice)))
        oracle.append(best)
    # MONAI's create_test_image_2d is solved exactly by thresholds; this task is not
    assert np.mean(oracle) < 0.75


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="spatial_dims"):
        make_synthetic_dataset(tmp_path, spatial_dims=4)
    with pytest.raises(ValueError, match="png"):
        make_synthetic_dataset(tmp_path, spatial_dims=3, image_format="png")
    with pytest.raises(ValueError, match="num_cases"):
        make_synthetic_dataset(tmp_path, num_cases=2)
    with pytest.raises(ValueError, match="size"):
        make_synthetic_dataset(tmp_path, size=(32, 32, 32))
