"""A training run killed with SIGKILL resumes from its ``last.pt`` and ends with exactly the weights of the
uninterrupted run (CPU, deterministic), through the bundle's own ``train.json``."""

import json
import re
import subprocess
import sys
from pathlib import Path

import forkserver
import pytest
import torch
from conftest import BUNDLES_DIR, LIGHT

from monai_ext.data import make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]


def _train(bundle: Path, run_root: Path, data: Path, extra_config=None, **overrides) -> subprocess.CompletedProcess:
    configs = [str(bundle / "configs" / "train.json")] + ([str(extra_config)] if extra_config else [])
    args = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(configs),
        "--meta_file",
        str(bundle / "configs" / "metadata.json"),
        "--logging_file",
        str(bundle / "configs" / "logging.conf"),
        "--bundle_root",
        str(run_root),
        "--dataset_dir",
        str(data),
        "--num_workers",
        "0",
        "--patch_size",
        "[32,32]",
        "--batch_size",
        "2",
        "--train#trainer#max_epochs",
        "3",
    ]
    for key, value in overrides.items():
        args += [f"--{key}", str(value)]
    return forkserver.run(args, cwd=bundle, timeout=600)


def _weights(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize(
    "name", ["unet", "higmisnet"]
)  # one optimiser; two generators, two discriminators, two optimisers
def test_a_run_killed_after_an_epoch_resumes_to_the_uninterrupted_weights(name, tmp_path):
    bundle = BUNDLES_DIR / name
    data = make_synthetic_dataset(tmp_path / "data", num_cases=6, spatial_dims=2, size=(40, 36), seed=3).parent
    config = json.loads((bundle / "configs" / "train.json").read_text())
    kill = (
        tmp_path / "kill.json"
    )  # SIGKILL right after epoch 2's checkpoint, as a crash or an out-of-memory killer would
    kill.write_text(
        json.dumps(
            {
                "run": config["run"][:-1]
                + [
                    "$@train#trainer.add_event_handler(monai.engines.workflow.Events.EPOCH_COMPLETED(once=2), lambda e: "
                    "os.kill(os.getpid(), 9))",
                    config["run"][-1],
                ]
            }
        )
    )

    light = LIGHT.get(name, {})
    uninterrupted = _train(bundle, tmp_path / "uninterrupted", data, **light)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    console = (
        uninterrupted.stdout + uninterrupted.stderr
    )  # quiet by default: one line per validation, no per-iteration loss
    assert (
        "Iter:" not in console
        and "Epoch[" not in console
        and len(re.findall(r"epoch \d/3: val_mean_dice", console)) == 3
    )
    killed = _train(bundle, tmp_path / "killed", data, kill, **light)
    assert killed.returncode == -9, killed.stderr[-3000:]
    models = tmp_path / "killed" / "models"
    assert not (models / "model_last.pt").exists()  # it never finished
    assert torch.load(models / "last.pt", weights_only=True)["trainer"]["iteration"] > 0

    resumed = _train(bundle, tmp_path / "killed", data, resume_from=models / "last.pt", **light)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stderr + resumed.stdout
    assert (
        "resumed from" in log
        and "at epoch 2 of 3" in log
        and "epoch 2/3:" not in log
        and "epoch 3/3: val_mean_dice" in log
    )
    assert "ignoring non-scalar output" not in log  # the handlers see MONAI's decollated output (Hi-gMISnet's engine)
    for file in ("model_last.pt", "model.pt"):
        a, b = _weights(models / file), _weights(tmp_path / "uninterrupted" / "models" / file)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{file}: {key}")
    assert not [p for p in models.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_resuming_from_a_missing_state_is_one_line(tmp_path):
    bundle = BUNDLES_DIR / "unet"
    data = make_synthetic_dataset(tmp_path / "data", num_cases=4, spatial_dims=2, size=(40, 36), seed=3).parent
    proc = _train(bundle, tmp_path / "run", data, resume_from=tmp_path / "run" / "models" / "last.pt")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path}/run/models/last.pt: no training state to resume from "
        "(a run writes last.pt into its models folder at the end of every epoch)"
    )
    assert "Traceback" not in proc.stderr and " ERROR " not in proc.stderr  # one line, not an engine's error log too
