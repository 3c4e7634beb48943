"""Every bundle trains from a planned overlay on real shapes, not only cubes: files that registry packages ship
(nilearn's MNI152 template and tissue maps, 2 mm; nibabel's ``anatomical.nii``, LAS, big-endian int16;
pydicom's CT5N series, 0.49 mm pixels and 2.5 mm slices) and non-square 2D images, through
``prepare folder``'s plan and the bundle's own ``train.json``, with no other setting; ``segment`` then needs
no option."""

import json
import sys
from pathlib import Path

import forkserver
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from conftest import BUNDLES, BUNDLES_DIR, LIGHT

from monai_ext.apps import segment
from monai_ext.bundle import read_record
from monai_ext.bundle.plan import plan_training
from monai_ext.data.folder import prepare_folder
from monai_ext.data.mni152 import MNI152_LABELS, make_mni152_cases

# the light networks, and MedSegDiff's sampler with few steps (its validation samples every window)
QUICK = {**LIGHT, "medsegdiff": {**LIGHT["medsegdiff"], "validate_steps": 2, "validate_ensemble": 1, "val_interval": 1}}
STEP_SECONDS = 0.3  # a plan for a slow machine: small patches, so that a test epoch takes seconds
NAMES = {int(k): v for k, v in MNI152_LABELS.items() if k}
ANATOMICAL = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
CT5N = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "98892001" / "CT5N"


def _prepare(name, images, labels, out, label_names, split=(0.5, 0.25, 0.25)):
    planner = lambda overlay, fingerprint: plan_training(  # noqa: E731
        BUNDLES_DIR / name, {**overlay, **QUICK.get(name, {})}, fingerprint, device="cpu", step_seconds=STEP_SECONDS
    )
    prepare_folder(images, labels, out, split=split, label_names=label_names, planner=planner)
    return json.loads((out / "overlay.json").read_text())


def _train(name, overlay_file, run):
    args = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        f"['configs/train.json','{overlay_file}']",
        "--bundle_root",
        str(run),
        "--train#trainer#max_epochs",
        "1",
    ]
    for key, value in QUICK.get(name, {}).items():
        args += [f"--{key}", json.dumps(value)]
    proc = forkserver.run(args, cwd=BUNDLES_DIR / name, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"training plan (prepare folder, for {name} on cpu)" in proc.stdout + proc.stderr
    assert "overridden" not in proc.stdout + proc.stderr  # nothing but the plan
    return proc


def _check_plan(overlay, dims):
    plan = overlay["plan"]
    patch = overlay["patch_size"]
    assert len(patch) == dims and all(p % m == 0 for p, m in zip(patch, plan["patch_multiple"]))
    assert overlay["batch_size"] * overlay["num_samples"] >= 2 and overlay["num_workers"] <= max(
        0, plan["machine"]["cores"] - 1
    )
    square = [list(p) for p in overlay["augmentation"]["rotate90_planes"]]
    assert all(patch[i] == patch[j] for i, j in square)
    return plan


@pytest.fixture(scope="module")
def mni(tmp_path_factory):
    # a smaller field of view than the full template (two thirds of each side): real anatomy and non-cubic shapes
    # at a third of the voxels, so that seven bundles validate in CI's minutes (the README's test takes the full one)
    return make_mni152_cases(tmp_path_factory.mktemp("mni") / "cases", num_cases=4, seed=0, shape=(61, 73, 61))


@pytest.fixture(scope="module")
def mni_2d(mni, tmp_path_factory):
    """Non-square 2D images: one axial slice of each MNI152 case (about 61x73)."""
    root = tmp_path_factory.mktemp("mni2d")
    for kind in ("images", "labels"):
        (root / kind).mkdir()
        for f in sorted((mni[0].parent / kind).glob("*.nii.gz")):
            volume = nib.load(str(f))
            data = np.asarray(volume.dataobj)[:, :, volume.shape[2] // 2]
            nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 1.0, 1.0])), str(root / kind / f.name))
    return root / "images", root / "labels"


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLES)
def test_every_bundle_trains_on_mni152_volumes_from_its_plan(name, mni, tmp_path):
    overlay = _prepare(name, *mni, tmp_path / "prepared", NAMES)
    plan = _check_plan(overlay, 3)
    assert plan["bundle"] == name and plan["target_spacing"] == [2.0, 2.0, 2.0] and overlay["pixdim"] is None
    assert (
        57 <= min(plan["median_shape_at_target"]) and max(plan["median_shape_at_target"]) <= 77
    )  # the MNI152 grid, cropped
    run = tmp_path / "run"
    _train(name, tmp_path / "prepared" / "overlay.json", run)
    record = read_record(run / "models" / "model.pt")
    assert record["settings"]["plan"] == plan and record["settings"]["patch_size"] == overlay["patch_size"]
    if name in LIGHT:
        return  # the light network's shape is an override the weights do not record
    case = Path(json.loads((tmp_path / "prepared" / "datalist.json").read_text())["test"][0]["image"])
    (result,) = segment(
        BUNDLES_DIR / name, case, tmp_path / "seg", checkpoint=run / "models" / "model.pt", device="cpu", progress=False
    )
    assert result.error is None, result.error
    mask, source = nib.load(str(result.output)), nib.load(str(case))
    assert mask.shape == source.shape and np.allclose(mask.affine, source.affine, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLES)
def test_every_bundle_trains_on_non_square_2d_images_from_its_plan(name, mni_2d, tmp_path):
    overlay = _prepare(name, *mni_2d, tmp_path / "prepared", NAMES)
    _check_plan(overlay, 2)
    _train(name, tmp_path / "prepared" / "overlay.json", tmp_path / "run")


def _thresholded(volume: np.ndarray) -> np.ndarray:
    """A label map from the intensities: 1 above the median of the non-zero voxels, 2 above their 90th percentile."""
    values = volume[volume > 0]
    return ((volume > np.median(values)).astype(np.uint8) + (volume > np.percentile(values, 90))).astype(np.uint8)


@pytest.mark.slow
def test_the_unet_plans_and_trains_on_a_real_las_t1_and_an_anisotropic_ct_series(tmp_path):
    from monai_ext.data.volume_io import read_volume

    ct = read_volume(CT5N)  # pydicom's CT series, read as segment reads it: 16x16x5, 0.49 x 0.49 x 2.5 mm
    t1 = nib.load(str(ANATOMICAL))
    for kind, (data, affine) in {
        "t1": (np.asarray(t1.dataobj), t1.affine),
        "ct": (np.asarray(ct.image[0]), np.asarray(ct.image.affine)),
    }.items():
        root = tmp_path / kind
        (root / "images").mkdir(parents=True)
        (root / "labels").mkdir()
        for i, flip in enumerate([False, True, False]):  # three cases: the volume, mirrored, and again
            image = data[::-1] if flip else data
            nib.save(nib.Nifti1Image(np.ascontiguousarray(image), affine), str(root / "images" / f"{kind}{i}.nii.gz"))
            nib.save(
                nib.Nifti1Image(_thresholded(np.ascontiguousarray(image).astype(float)), affine),
                str(root / "labels" / f"{kind}{i}.nii.gz"),
            )
        overlay = _prepare(
            "unet",
            root / "images",
            root / "labels",
            root / "prepared",
            {1: "bright", 2: "brightest"},
            split=(0.34, 0.33, 0.33),
        )
        plan = _check_plan(overlay, 3)
        if (
            kind == "ct"
        ):  # 2.5 mm slices against 0.49 mm pixels: the slice axis is pooled only once the others have caught up
            spacing = np.round(np.linalg.norm(np.asarray(ct.image.affine)[:3, :3], axis=0), 3)
            assert sorted(spacing)[-1] == 2.5 and plan["target_spacing"] == [
                round(float(s), 4) for s in np.linalg.norm(affine[:3, :3], axis=0)
            ]
            thick = int(np.argmax(plan["target_spacing"]))
            assert [level[thick] for level in plan["strides"]][0] == 1 and overlay["patch_size"][thick] % plan[
                "patch_multiple"
            ][thick] == 0
            assert [thick, (thick + 1) % 3] not in overlay["augmentation"][
                "rotate90_planes"
            ]  # no quarter turn across the thick axis
        run = tmp_path / f"run_{kind}"
        _train("unet", root / "prepared" / "overlay.json", run)
        case = root / "images" / f"{kind}0.nii.gz"
        (result,) = segment(
            BUNDLES_DIR / "unet",
            case,
            tmp_path / f"seg_{kind}",
            checkpoint=run / "models" / "model.pt",
            device="cpu",
            progress=False,
        )
        assert result.error is None, result.error
        mask = nib.load(str(result.output))
        assert mask.shape == nib.load(str(case)).shape and np.allclose(mask.affine, affine, atol=1e-4)
        assert torch.load(run / "models" / "model.pt", weights_only=True)  # plain tensors
