"""A bundle's ``inference.json`` is the one definition of its pipeline: ``python -m monai_ext segment`` and
``python -m monai.bundle run --config_file configs/inference.json`` write the same files for the same case,
for every pipeline (the bundles whose inference.json differs from the template in more than the network, and the
U-Net for the others), with a 2D config (slice by slice) and a 3D config on a real scanner volume."""

import json
import shutil
import sys
from pathlib import Path

import forkserver
import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import BUNDLES_DIR, LIGHT, pipelines
from monai.bundle import ConfigParser

from monai_ext.apps import segment

ROOT = Path(__file__).resolve().parents[1]
VOLUME = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"  # T1 crop, int16, LAS
SMALL = {"medsegdiff": {"num_inference_steps": 2, "ensemble": 2}}
# random weights large enough that the untrained network's labels vary over the volume
WEIGHT_STD = {"higmisnet": 0.5, "madgnet": 0.5}


def _settings(name: str, dims: int) -> dict:
    size = 32 if name == "madgnet" else 16  # MADGNet down-samples five times
    return {"spatial_dims": dims, "patch_size": [size] * dims, **SMALL.get(name, {}), **LIGHT.get(name, {})}


def _random_weights(name: str, settings: dict, root: Path) -> None:
    parser = ConfigParser()
    parser.read_config(str(BUNDLES_DIR / name / "configs" / "inference.json"))
    parser.update({"bundle_root": str(root), **settings})
    net = parser.get_parsed_content("network_def")
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():  # some bundles start their output layer at zero: make every weight count
            p.normal_(0, WEIGHT_STD.get(name, 0.2))
    (root / "models").mkdir(parents=True)
    torch.save(net.state_dict(), root / "models" / "model.pt")


@pytest.mark.slow
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", pipelines("inference.json"))  # the others: the U-Net's with another network
def test_segment_and_monai_bundle_run_write_the_same_files(name, dims, tmp_path):
    bundle = BUNDLES_DIR / name
    settings = _settings(name, dims)
    weights_root = tmp_path / "trained"
    _random_weights(name, settings, weights_root)
    data = tmp_path / "data"
    data.mkdir()
    (data / "datalist.json").write_text(json.dumps({"test": [{"image": str(VOLUME)}]}))

    args = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        "configs/inference.json",
        "--bundle_root",
        str(weights_root),
        "--dataset_dir",
        str(data),
        "--output_dir",
        str(tmp_path / "bundle_run"),
        "--dataloader#num_workers",
        "0",
        "--device",
        "cpu",
    ]
    for key, value in settings.items():
        args += [f"--{key}", json.dumps(value)]
    proc = forkserver.run(args, cwd=bundle, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    (result,) = segment(
        bundle,
        VOLUME,
        tmp_path / "segment",
        device="cpu",
        overrides={"bundle_root": str(weights_root), **settings},
        progress=False,
    )
    assert result.error is None, result.error

    theirs = sorted(p.name for p in (tmp_path / "bundle_run").iterdir())
    ours = sorted(p.name for p in (tmp_path / "segment").iterdir())
    assert ours == theirs and "anatomical_seg.nii.gz" in ours
    source = nib.load(str(VOLUME))
    for file in ours:
        a, b = nib.load(str(tmp_path / "segment" / file)), nib.load(str(tmp_path / "bundle_run" / file))
        assert a.shape[:3] == source.shape, file
        np.testing.assert_allclose(a.affine, source.affine, atol=1e-5)
        np.testing.assert_allclose(b.affine, source.affine, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj).reshape(a.shape), err_msg=file)
        for key in ("qform_code", "sform_code", "xyzt_units"):  # the input's (2, 2, mm and s), not MONAI's 1
            assert a.header[key] == b.header[key] == source.header[key], (file, key)
    mask = np.asarray(nib.load(str(tmp_path / "segment" / "anatomical_seg.nii.gz")).dataobj)
    assert len(np.unique(mask)) > 1  # a mask with content, so that agreeing means something


def test_a_dicom_series_is_read_alike_by_segment_and_monai_bundle_run(tmp_path):
    """Both load DICOM with monai_ext's series reader (the bundles' LoadImageSeriesd): the same voxels and
    geometry on an oblique series with rounded positions, and a broken series refused by both, not read
    silently by another reader."""
    from test_dicom import _ge_like_series

    settings = _settings("unet", 3)
    weights_root = tmp_path / "trained"
    _random_weights("unet", settings, weights_root)
    _ge_like_series(tmp_path / "data" / "ge")
    shutil.copytree(tmp_path / "data" / "ge", tmp_path / "data" / "gap")
    (tmp_path / "data" / "gap" / "IM0010.dcm").unlink()
    outputs = {}
    for case in ("ge", "gap"):
        (tmp_path / "data" / "datalist.json").write_text(
            json.dumps({"test": [{"image": str(tmp_path / "data" / case)}]})
        )
        args = [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            "configs/inference.json",
            "--bundle_root",
            str(weights_root),
            "--dataset_dir",
            str(tmp_path / "data"),
            "--output_dir",
            str(tmp_path / f"run_{case}"),
            "--dataloader#num_workers",
            "0",
            "--device",
            "cpu",
        ] + [a for k, v in settings.items() for a in (f"--{k}", json.dumps(v))]
        outputs[case] = forkserver.run(args, cwd=BUNDLES_DIR / "unet", timeout=600)
    assert outputs["ge"].returncode == 0, outputs["ge"].stderr[-4000:]
    assert outputs["gap"].returncode != 0 and "1 missing slice(s)" in outputs["gap"].stderr
    (result,) = segment(
        BUNDLES_DIR / "unet",
        tmp_path / "data" / "ge",
        tmp_path / "segment",
        device="cpu",
        overrides={"bundle_root": str(weights_root), **settings},
        progress=False,
    )
    assert result.error is None, result.error
    ours, theirs = nib.load(str(result.output)), nib.load(str(tmp_path / "run_ge" / "ge_seg.nii.gz"))
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj).reshape(ours.shape))
    assert ours.shape == (40, 36, 20) and len(np.unique(np.asarray(ours.dataobj))) > 1
