"""Your own data, end to end, as a user runs it: three 3D NIfTI cases -> ``prepare folder`` -> train the U-Net
bundle in 3D with a time budget -> ``segment`` a NIfTI and a DICOM series with no setting repeated -> masks on
the inputs' grids, the trained label name in the DICOM SEG -> ``export`` -> the exported bundle's own
``python -m monai.bundle run`` (where ``monai_ext`` is not installed) writes the same mask."""

import json
import sys
from pathlib import Path

import forkserver
import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import BUNDLES_DIR

import monai_ext.data.volume_io as vio
from monai_ext.apps import segment
from monai_ext.bundle import read_record

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = BUNDLES_DIR / "unet"
CT5N = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "98892001" / "CT5N"


def _own_cases(folder: Path) -> None:
    """Three cases on an oblique, anisotropic grid: a bright ellipsoid labelled 1 ("lesion") in noise."""
    rng = np.random.default_rng(0)
    rotation = np.array([[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.9, 0.9, 2.0])
    affine[:3, 3] = [-12.0, 30.0, 5.0]
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in (28, 24, 12)], indexing="ij"))
    for i in range(3):
        centre = rng.uniform([9, 8, 4], [19, 16, 8])
        label = (((grid - centre[:, None, None, None]) / np.array([6, 5, 3])[:, None, None, None]) ** 2).sum(0) <= 1
        image = rng.normal(0, 0.3, label.shape) + 2.0 * label
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), str(folder / "images" / f"subject{i}.nii.gz"))
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), str(folder / "labels" / f"subject{i}.nii.gz"))


@pytest.mark.slow
def test_own_data_prepare_train_segment_export(tmp_path, python_without_monai_ext):
    own = tmp_path / "own"
    _own_cases(own)
    prepared = tmp_path / "prepared"
    cli = [sys.executable, "-m", "monai_ext"]
    proc = forkserver.run(
        cli
        + [
            "prepare",
            "folder",
            "--images",
            str(own / "images"),
            "--labels",
            str(own / "labels"),
            "--label-name",
            "1=lesion",
            "--step-seconds",
            "3",
            str(prepared),
        ],
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    datalist = json.loads((prepared / "datalist.json").read_text())
    assert [len(datalist[k]) for k in ("training", "validation", "test")] == [1, 1, 1]
    overlay = json.loads((prepared / "overlay.json").read_text())
    assert overlay["spatial_dims"] == 3 and overlay["class_names"] == {"0": "background", "1": "lesion"}
    assert overlay["plan"]["machine"]["target_seconds_per_step"] == 3.0

    # train as the README says: the bundle's train.json, the data's overlay, a time budget instead of epochs
    run = tmp_path / "run"
    proc = forkserver.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            f"['configs/train.json','{prepared / 'overlay.json'}']",
            "--bundle_root",
            str(run),
            "--time_budget",
            "0.25",
            "--num_workers",
            "0",
        ],
        cwd=BUNDLE,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "time budget" in proc.stdout + proc.stderr
    record = read_record(run / "models" / "model.pt")
    assert record["settings"]["spatial_dims"] == 3 and record["settings"]["class_names"]["1"] == "lesion"
    trained = json.loads((run / "models" / "trained.json").read_text())
    assert trained["spatial_dims"] == 3 and trained["trained_run"]["epochs"] < 200  # stopped by the budget
    assert (run / "models" / "model_last.pt").is_file()

    # segment with nothing repeated: the checkpoint brings its settings
    case = Path(datalist["test"][0]["image"])
    (nifti,) = segment(
        BUNDLE, case, tmp_path / "seg", checkpoint=run / "models" / "model.pt", device="cpu", progress=False
    )
    assert nifti.error is None, nifti.error
    source, mask = nib.load(str(case)), nib.load(str(nifti.output))
    assert mask.shape == source.shape and np.allclose(mask.affine, source.affine, atol=1e-5)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
    (seg,) = segment(
        BUNDLE,
        CT5N,
        tmp_path / "seg",
        checkpoint=run / "models" / "model.pt",
        device="cpu",
        output_format="dicom-seg",
        progress=False,
    )
    assert seg.error is None, seg.error
    dataset = hd.seg.segread(seg.output)
    assert [s.SegmentLabel for s in dataset.SegmentSequence] == ["lesion"]
    series = vio.read_volume(CT5N)
    frames = dataset.get_pixels_by_source_instance(
        source_sop_instance_uids=[d.SOPInstanceUID for d in series.series.headers],
        combine_segments=True,
        skip_overlap_checks=True,
    )
    assert np.transpose(frames, (2, 1, 0)).shape == tuple(series.image.shape[1:])

    # a setting changed against the weights is one line naming it
    proc = forkserver.run(
        cli
        + [
            "segment",
            "--bundle",
            str(BUNDLE),
            "--checkpoint",
            str(run / "models" / "model.pt"),
            "--input",
            str(case),
            "--output",
            str(tmp_path / "bad"),
            "--set",
            "spatial_dims=2",
        ],
        timeout=300,
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "spatial_dims: trained 3, configured 2" in errors[0], (
        proc.stderr[-2000:]
    )

    # export, then run the exported bundle where monai_ext is not installed
    exported = tmp_path / "unet_lesion"
    proc = forkserver.run(
        cli
        + [
            "export",
            "--bundle",
            str(BUNDLE),
            "--checkpoint",
            str(run / "models" / "model.pt"),
            "--output",
            str(exported),
            "--local-only",
        ],
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((exported / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {
        "0": "background",
        "1": "lesion",
    }  # MONAI Label's /info
    assert (
        "monai-ext" not in meta["required_packages_version"]
        and (exported / "monai_ext" / "inferers" / "streaming.py").is_file()
    )
    python = python_without_monai_ext
    (tmp_path / "test_case").mkdir()
    (tmp_path / "test_case" / "datalist.json").write_text(json.dumps({"test": [{"image": str(case)}]}))
    proc = forkserver.run(
        [
            str(python),
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            "configs/inference.json",
            "--dataset_dir",
            str(tmp_path / "test_case"),
            "--output_dir",
            str(tmp_path / "exported_run"),
            "--dataloader#num_workers",
            "0",
            "--device",
            "cpu",
        ],
        cwd=exported,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    theirs = nib.load(str(tmp_path / "exported_run" / nifti.output.name))
    np.testing.assert_array_equal(np.asarray(theirs.dataobj), np.asarray(mask.dataobj))
    np.testing.assert_allclose(theirs.affine, mask.affine, atol=1e-5)
