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


@pytest.mark.slow
def test_the_quick_start_runs_as_written_on_a_fresh_copy(tmp_path):
    copy = tmp_path / "repo"
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for f in [f for f in listed if f and not f.startswith("bundles/") and (ROOT / f).is_file()]:
        (copy / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, copy / f)
    shutil.copytree(BUNDLES_DIR, copy / "bundles")
    # `source .venv/bin/activate`: this interpreter's environment first on PATH
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": sys.prefix}
    script = "set -e\n" + _block("quickstart")
    proc = subprocess.run(["bash", "-c", script], cwd=copy, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    unet = copy / "bundles" / "unet"
    assert (unet / "models" / "model.pt").is_file() and (unet / "eval" / "training_curves.png").is_file()
    assert (unet / "out" / "case_000_seg.nii.gz").is_file()
    assert "unet" in proc.stdout and "segment: 1 written" in proc.stderr + proc.stdout
    assert "Iter:" not in proc.stdout + proc.stderr  # training is quiet by default
