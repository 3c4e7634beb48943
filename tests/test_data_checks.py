"""Intensity schemes equal their numpy definitions; mismatched training pairs and missing datalists fail
with one line naming the file; every bundle's properties check passes with no data present."""

from pathlib import Path

import forkserver
import numpy as np
import pytest
import torch
from conftest import BUNDLES, BUNDLES_DIR
from monai.data import MetaTensor

from monai_ext.data import LazyDatalist, require_cases
from monai_ext.errors import InputError
from monai_ext.transforms import CheckSameGeometryd, IntensityNormalizationd

ROOT = Path(__file__).resolve().parents[1]


def test_intensity_schemes_equal_numpy():
    x = np.random.default_rng(0).normal(50, 20, (3, 8, 9)).astype(np.float32)
    x[:, :2] = 0
    out = IntensityNormalizationd("image", scheme="zscore", channel_wise=True)({"image": torch.from_numpy(x)})[
        "image"
    ].numpy()
    ref = (x - x.mean(axis=(1, 2), keepdims=True)) / x.std(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    out = IntensityNormalizationd("image", scheme="zscore", nonzero=True, channel_wise=True)(
        {"image": torch.from_numpy(x)}
    )["image"].numpy()
    for c in range(3):
        nz = x[c] != 0
        np.testing.assert_allclose(out[c][nz], (x[c][nz] - x[c][nz].mean()) / x[c][nz].std(), rtol=1e-4, atol=1e-4)
        assert (out[c][~nz] == 0).all()
    out = IntensityNormalizationd("image", scheme="window", a_min=0, a_max=80)({"image": torch.from_numpy(x)})[
        "image"
    ].numpy()
    np.testing.assert_allclose(out, np.clip(x / 80.0, 0, 1), rtol=1e-6, atol=1e-6)
    out = IntensityNormalizationd("image", scheme="none", channels=1)({"image": torch.from_numpy(x)})["image"].numpy()
    np.testing.assert_array_equal(out, x[:1])
    with pytest.raises(ValueError, match="a_min < a_max"):
        IntensityNormalizationd("image", scheme="window", a_min=5, a_max=5)
    with pytest.raises(ValueError, match="scheme"):
        IntensityNormalizationd("image", scheme="minmax")


def test_image_and_label_on_other_grids_is_one_line_naming_the_file():
    image = MetaTensor(
        torch.zeros(1, 8, 8, 4),
        affine=torch.diag(torch.tensor([1.0, 1.0, 2.0, 1.0])),
        meta={"filename_or_obj": "img.nii"},
    )
    label = MetaTensor(torch.zeros(1, 8, 8, 3), affine=image.affine, meta={"filename_or_obj": "lab.nii"})
    with pytest.raises(
        ValueError,
        match=r"^lab.nii: label shape \[8, 8, 3\] differs from image shape \[8, 8, 4\] \(img.nii\); it covers a "
        r"block of the image's grid, as a DICOM SEG without its empty frames does: pad_keys=\['label'\] \(the "
        r"bundles' pad_label_to_image\) places it$",
    ):
        CheckSameGeometryd(["image", "label"])({"image": image, "label": label})
    flipped = MetaTensor(
        torch.zeros(1, 8, 8, 4),
        affine=torch.diag(torch.tensor([-1.0, -1.0, 2.0, 1.0])),
        meta={"filename_or_obj": "lab.nii"},
    )
    with pytest.raises(ValueError, match="lab.nii: label affine differs"):
        CheckSameGeometryd(["image", "label"])({"image": image, "label": flipped})
    # readers give a 2D image a 3x3 or a 4x4 affine: the same grid either way
    a = MetaTensor(torch.zeros(3, 6, 5), affine=torch.eye(3))
    b = MetaTensor(torch.zeros(1, 6, 5), affine=torch.eye(4))
    CheckSameGeometryd(["image", "label"])({"image": a, "label": b})


def test_a_label_on_a_block_of_the_image_grid_is_placed_on_it_where_asked():
    """A DICOM SEG that leaves out its empty frames, as MONAI Label converts it: the same axes and spacing as the
    image, slices 3 to 7 of 10 only, its origin where slice 3 is."""
    affine = torch.tensor([[0.0, -0.8, 0.0, 30.0], [0.8, 0.0, 0.0, -12.0], [0.0, 0.0, 2.5, -40.0], [0, 0, 0, 1]])
    image = MetaTensor(torch.rand(1, 12, 9, 10), affine=affine, meta={"filename_or_obj": "mr.nii.gz"})
    block = torch.zeros(1, 12, 9, 5, dtype=torch.uint8)
    block[0, 2:6, 1:4, 1] = 2
    origin = affine[:3, :3] @ torch.tensor([0.0, 0.0, 3.0]) + affine[:3, 3]
    label = MetaTensor(block, affine=torch.cat([torch.cat([affine[:3, :3], origin[:, None]], 1), affine[3:]]))
    label.meta["filename_or_obj"] = "seg.nrrd"
    out = CheckSameGeometryd(["image", "label"], pad_keys=["label"])({"image": image, "label": label})["label"]
    assert out.shape == (1, 12, 9, 10) and out.dtype == torch.uint8
    torch.testing.assert_close(out.affine, image.affine)
    assert out[0, :, :, 3:8].equal(block[0]) and out.sum() == block.sum()  # slice 4 of the image holds the label
    assert out.meta["filename_or_obj"] == "seg.nrrd"
    # half a voxel off the grid, past its end, or another spacing: not a block, refused as before
    for shift, size, spacing in ((3.5, 5, 2.5), (7.0, 5, 2.5), (3.0, 5, 2.0)):
        a = affine.clone()
        a[2, 2] = spacing
        a[:3, 3] = affine[:3, :3] @ torch.tensor([0.0, 0.0, shift]) + affine[:3, 3]
        other = MetaTensor(torch.zeros(1, 12, 9, size), affine=a, meta={"filename_or_obj": "seg.nrrd"})
        with pytest.raises(
            ValueError,
            match=r"^seg.nrrd: label shape \[12, 9, 5\] differs from image shape \[12, 9, 10\] \(mr.nii.gz\)$",
        ):
            CheckSameGeometryd(["image", "label"], pad_keys=["label"])({"image": image, "label": other})


def test_a_datalist_is_read_on_first_use_and_a_run_requires_its_cases(tmp_path):
    lazy = LazyDatalist(tmp_path / "absent" / "datalist.json", "training")
    assert len(lazy) == 0  # what a property check sees without the data, as with the zoo's globs
    with pytest.raises(InputError, match=r"absent/datalist.json: no such datalist"):
        require_cases(lazy)
    (tmp_path / "datalist.json").write_text('{"test": [{"image": "a.nii.gz", "label": "b.nii.gz"}], "validation": []}')
    test = LazyDatalist(tmp_path / "datalist.json", "test", keys=["image"])
    assert list(test) == [{"image": str(tmp_path / "a.nii.gz")}]
    with pytest.raises(InputError, match=r"datalist.json: test case 0 \(image\): .*a.nii.gz: no such file$"):
        require_cases(test)
    (tmp_path / "a.nii.gz").write_bytes(b"")
    require_cases(test, [{"image": "x"}])
    with pytest.raises(ValueError, match=r"datalist.json: no cases under 'validation'"):
        require_cases(LazyDatalist(tmp_path / "datalist.json", "validation"))
    with pytest.raises(ValueError, match="no cases"):
        require_cases([])


@pytest.mark.parametrize("name", BUNDLES)
def test_inference_properties_check_passes_with_no_data_present(name, tmp_path):
    from monai.bundle.workflows import ConfigWorkflow

    bundle = BUNDLES_DIR / name
    workflow = ConfigWorkflow(
        config_file=str(bundle / "configs" / "inference.json"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="infer",
        bundle_root=str(tmp_path),
        dataset_dir=str(tmp_path / "no_data_here"),
    )
    workflow.initialize()
    assert not workflow.check_properties()
    assert not any(tmp_path.iterdir())  # nothing written either


def test_a_bundle_run_with_bad_data_stops_with_one_line_naming_the_file(tmp_path):
    """``python -m monai.bundle run`` on data that cannot train: one ``error:`` line, no traceback."""
    import json
    import shutil
    import sys

    import nibabel as nib

    from monai_ext.data import make_synthetic_dataset

    good = make_synthetic_dataset(tmp_path / "good", num_cases=6, spatial_dims=2, size=(40, 36), seed=1).parent
    datalist = json.loads((good / "datalist.json").read_text())
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "datalist.json").write_text(json.dumps({**datalist, "training": []}))
    no_validation = tmp_path / "no_validation"
    shutil.copytree(good, no_validation)
    (no_validation / "datalist.json").write_text(json.dumps({**datalist, "validation": []}))
    missing = tmp_path / "missing"
    shutil.copytree(good, missing)
    (missing / datalist["training"][1]["image"]).unlink()
    shorter = tmp_path / "shorter"
    shutil.copytree(good, shorter)
    label = shorter / datalist["training"][0]["label"]
    image = nib.load(str(label))
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[:-2], image.affine), str(label))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "datalist.json").write_text("{ not json")
    cases = {
        tmp_path / "absent": "absent/datalist.json: no such datalist",
        empty: "empty/datalist.json: no cases under 'training'",
        no_validation: "no_validation/datalist.json: no cases under 'validation'",
        missing: f"missing/datalist.json: training case 1 (image): {missing / datalist['training'][1]['image']}: no such file",
        shorter: f"{label}: label shape [38, 36] differs from image shape [40, 36]",
        broken: "broken/datalist.json: not a datalist",
    }
    bundle = BUNDLES_DIR / "unet"
    for folder, message in cases.items():
        proc = forkserver.run(
            [
                sys.executable,
                "-m",
                "monai.bundle",
                "run",
                "--config_file",
                str(bundle / "configs" / "train.json"),
                "--meta_file",
                str(bundle / "configs" / "metadata.json"),
                "--bundle_root",
                str(tmp_path / "run"),
                "--dataset_dir",
                str(folder),
                "--num_workers",
                "0",
                "--patch_size",
                "[32,32]",
                "--train#trainer#max_epochs",
                "1",
            ],
            cwd=bundle,
            timeout=300,
        )
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode != 0 and len(errors) == 1 and message in errors[0], (folder, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "models").exists()  # nothing trained, nothing written


def test_importing_the_package_leaves_the_process_excepthook_alone():
    """A MONAI Label server, a notebook or pytest that imports ``monai_ext`` keeps its own hook; the command line
    and a bundle's ``initialize`` install the one-line hook themselves (the test above runs through it)."""
    import subprocess
    import sys

    code = (
        "import sys; hook = sys.excepthook; import monai_ext, monai_ext.apps.segment, monai_ext.bundle, monai_ext.handlers; "
        "assert sys.excepthook is hook; from monai_ext.errors import install_excepthook, InputError; install_excepthook(); "
        "raise InputError('case.nii.gz: the problem')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr == "error: case.nii.gz: the problem\n", proc.stderr[-2000:]


def test_every_error_the_package_raises_for_a_user_has_one_root():
    from monai_ext.bundle.checks import SettingError
    from monai_ext.bundle.export import ExportError
    from monai_ext.bundle.render import RenderError
    from monai_ext.bundle.trained import SettingsMismatch
    from monai_ext.data.folder import DatasetCheckError
    from monai_ext.data.public import DatasetLayoutError
    from monai_ext.errors import CheckpointError, MissingPackageError, ReportedError, first_line
    from monai_ext.handlers import TrainingError

    for kind in (
        InputError,
        CheckpointError,
        MissingPackageError,
        SettingError,
        ExportError,
        RenderError,
        SettingsMismatch,
        DatasetCheckError,
        DatasetLayoutError,
        TrainingError,
    ):
        assert issubclass(kind, ReportedError), kind
    assert first_line(ValueError("first\nsecond")) == "first" and first_line(KeyError()) == "KeyError"
    assert first_line(OSError("a\x1b[2Jb")) == "a\\x1b[2Jb"  # a control character cannot hide what follows it
