"""The MONAI Label check (scripts/monailabel/check.py): what it sets up is tested here in our own environment;
the check itself needs MONAI Label's environment (scripts/monailabel/setup_env.sh) and runs where that is
installed."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import BUNDLES_DIR
from monai.bundle import ConfigParser

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("monailabel_check", ROOT / "scripts" / "monailabel" / "check.py")
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)


def test_studies_are_in_monai_labels_local_datastore_layout(tmp_path):
    ids = check.make_studies(tmp_path / "studies", cases=6)
    assert len(ids) == 6
    for image_id in ids:
        image = nib.load(str(tmp_path / "studies" / f"{image_id}.nii.gz"))
        label = nib.load(str(tmp_path / "studies" / "labels" / "final" / f"{image_id}.nii.gz"))
        assert image.shape == label.shape and np.allclose(image.affine, label.affine)
        assert set(np.unique(np.asarray(label.dataobj))) <= {0, 1, 2}


@pytest.mark.parametrize("name", ["unet", "madgnet", "medsegdiff", "higmisnet"])
def test_each_bundle_is_installed_with_small_settings_and_weights_it_can_load(name, tmp_path):
    target = check.install_bundle(name, tmp_path / "model")
    parser = ConfigParser()
    parser.read_config(str(target / "configs" / "inference.json"))
    assert parser["patch_size"] == check.OVERRIDES["patch_size"]
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(target / "models" / "model.pt", weights_only=True))
    meta = json.loads((target / "configs" / "metadata.json").read_text())
    assert "channel_def" in meta["network_data_format"]["outputs"]["pred"]  # MONAI Label's label names
    assert (BUNDLES_DIR / name / "configs" / "inference.json").read_text() != (
        target / "configs" / "inference.json"
    ).read_text()


def test_the_monailabel_check_passes_where_monailabel_is_installed(tmp_path):
    pytest.importorskip("monailabel")  # only in the environment setup_env.sh builds
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "monailabel" / "check.py"),
            "--bundles",
            "unet",
            "--work",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads((tmp_path / "monailabel_check.json").read_text())["bundles"]["unet"]["ok"]


def test_the_pacs_studies_are_ct_series_with_their_labels_on_the_same_grid(tmp_path):
    """What scripts/monailabel/check_dicom.py uploads to Orthanc (scripts/pacs/make_studies.py)."""
    from monai_ext.data.volume_io import read_volume

    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "pacs" / "make_studies.py"),
            str(tmp_path),
            "--cases",
            "2",
            "--size",
            "32",
            "32",
            "12",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    cases = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len({c["study"] for c in cases}) == 2
    for n, case in enumerate(cases):
        volume = read_volume(case["folder"])
        label = nib.load(str(tmp_path / f"case{n}_label.nii.gz"))
        assert volume.image.shape[1:] == label.shape == (32, 32, 12) and volume.series.uid == case["series"]
        np.testing.assert_allclose(volume.image.affine.numpy(), label.affine, atol=1e-6)
        assert volume.series.modality == "CT" and volume.image.min() >= -1024


@pytest.mark.parametrize("name", ["unet", "madgnet"])
def test_each_bundle_is_installed_for_3d_for_the_dicom_check(name, tmp_path):
    spec3d = importlib.util.spec_from_file_location("check_dicom", ROOT / "scripts" / "monailabel" / "check_dicom.py")
    check_dicom = importlib.util.module_from_spec(spec3d)
    spec3d.loader.exec_module(check_dicom)
    target = check.install_bundle(name, tmp_path / "model", check_dicom.SETTINGS_3D)
    parser = ConfigParser()
    parser.read_config(str(target / "configs" / "inference.json"))
    assert parser["spatial_dims"] == 3 and parser["patch_size"] == [32, 32, 32]
    parser.get_parsed_content("network_def").load_state_dict(
        torch.load(target / "models" / "model.pt", weights_only=True)
    )


def test_the_mr_studies_carry_seg_labels_whose_segment_numbers_are_the_label_values(tmp_path):
    """What scripts/monailabel/check_dicom_mr.py stores in Orthanc: MR series and, from this project's SEG writer,
    their labels; a label map without label 1 keeps the tubes as segment 2, so that MONAI Label's SEG reader
    (segment number = label value) trains on the right class."""
    import highdicom as hd

    from monai_ext.data.volume_io import read_volume

    args = [
        "--cases",
        "2",
        "--size",
        "32",
        "24",
        "12",
        "--modality",
        "MR",
        "--prefix",
        "mr",
        "--seg",
        "--tube-only",
        "1",
    ]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "pacs" / "make_studies.py"), str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    cases = [json.loads(line) for line in proc.stdout.splitlines()]
    for n, case in enumerate(cases):
        volume = read_volume(case["folder"])
        assert volume.series.modality == "MR" and volume.image.shape[1:] == (32, 24, 12)
        truth = np.asarray(nib.load(case["label"]).dataobj)
        assert set(np.unique(truth)) == ({0, 2} if n == 0 else {0, 1, 2})
        seg = hd.seg.segread(case["seg"])
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == case["series"]
        assert [(int(s.SegmentNumber), s.SegmentLabel) for s in seg.SegmentSequence] == [(1, "blob"), (2, "tube")]
        numbers = [
            int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            for f in seg.PerFrameFunctionalGroupsSequence
        ]
        for number in (1, 2):  # each segment's voxels, over the frames of the series, are the label value's
            voxels = sum(int(frame.sum()) for frame, n in zip(seg.pixel_array, numbers) if n == number)
            assert voxels == int((truth == number).sum())
