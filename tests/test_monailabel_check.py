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
    assert (ROOT / "bundles" / name / "configs" / "inference.json").read_text() != (target / "configs" / "inference.json").read_text()


def test_the_monailabel_check_passes_where_monailabel_is_installed(tmp_path):
    pytest.importorskip("monailabel")  # only in the environment setup_env.sh builds
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "monailabel" / "check.py"), "--bundles", "unet", "--work", str(tmp_path)],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads((tmp_path / "monailabel_check.json").read_text())["bundles"]["unet"]["ok"]
