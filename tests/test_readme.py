"""The README's quick start runs as written, on a fresh copy of the repository (its git-tracked files), with the
environment activated as the README says: the README cannot drift from the code."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BUNDLES_DIR

ROOT = Path(__file__).resolve().parents[1]


def _block(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("```bash", text.index(f"<!-- {marker} -->")) + len("```bash")
    return text[start : text.index("```", start)]


def _run_on_a_fresh_copy(marker: str, copy: Path, prepare=None) -> subprocess.CompletedProcess:
    """The README block after ``<!-- marker -->``, with ``set -e``, in a copy of the git-tracked files and the
    environment activated as the README says; ``prepare(copy)`` first puts what the block expects in place."""
    listed = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    )
    for f in [f for f in listed if f and not f.startswith("bundles/") and (ROOT / f).is_file()]:
        (copy / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, copy / f)
    shutil.copytree(BUNDLES_DIR, copy / "bundles")
    if prepare:
        prepare(copy)
    # `source .venv/bin/activate`: this interpreter's environment first on PATH
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "VIRTUAL_ENV": sys.prefix,
    }
    proc = subprocess.run(
        ["bash", "-c", "set -e\n" + _block(marker)], cwd=copy, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


@pytest.mark.slow
def test_the_quick_start_runs_as_written_on_a_fresh_copy(tmp_path):
    copy = tmp_path / "repo"
    proc = _run_on_a_fresh_copy("quickstart", copy)
    unet = copy / "bundles" / "unet"
    assert (unet / "models" / "model.pt").is_file() and (unet / "eval" / "training_curves.png").is_file()
    assert (unet / "out" / "case_000_seg.nii.gz").is_file()
    assert "unet" in proc.stdout and "segment: 1 written" in proc.stderr + proc.stdout
    assert "Iter:" not in proc.stdout + proc.stderr  # training is quiet by default


@pytest.mark.slow
def test_the_own_data_block_runs_as_written_on_real_shaped_volumes(tmp_path):
    """Six MNI152 volumes in ``mine/`` (91x109x91 at 2 mm, each cropped differently: not cubes), then the block:
    prepare and plan, train with the overlay and a budget only, segment with no option."""
    import json

    import nibabel as nib
    import numpy as np

    from monai_ext.data.mni152 import make_mni152_cases

    copy = tmp_path / "repo"
    proc = _run_on_a_fresh_copy(
        "own-data", copy, prepare=lambda root: make_mni152_cases(root / "mine", num_cases=6, seed=1)
    )
    output = proc.stdout + proc.stderr
    assert "plan for unet on cpu: patch" in output and "training plan (prepare folder, for unet on cpu)" in output
    assert "time budget" in output and "Traceback" not in output
    overlay = json.loads((copy / "data" / "mine" / "overlay.json").read_text())
    assert overlay["class_names"] == {"0": "background", "1": "grey_matter", "2": "white_matter"}
    for image in sorted((copy / "mine" / "images").glob("*.nii.gz")):
        mask = nib.load(str(copy / "out" / "mine" / image.name.replace(".nii.gz", "_seg.nii.gz")))
        source = nib.load(str(image))
        assert mask.shape == source.shape and np.allclose(mask.affine, source.affine, atol=1e-5)
    assert "segment: 6 written" in output
