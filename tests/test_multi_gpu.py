"""Scale-out training: every bundle's ``multi_gpu_train.json`` under ``torchrun`` with two processes on the
CPU (gloo), on tiny synthetic data; both ranks must end with the same weights, and the weights must have
moved (so the two ranks really trained, in step)."""

import json
import os
import sys
from pathlib import Path

import forkserver
import pytest
import torch
from conftest import BUNDLES_DIR, pipelines
from test_bundles import FAST, _patch

from monai_ext.data import make_synthetic_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("ddp") / "syn2d", num_cases=10, spatial_dims=2, size=(36, 36), seed=4
    ).parent


def _save_each_rank(bundle: Path, folder: Path) -> Path:
    """A config overlay, used by this test only, that saves each rank's parameters after the bundle's own
    initialisation and before its own finalisation (``+`` merges into the bundle's lists)."""
    own = json.loads((bundle / "configs" / "multi_gpu_train.json").read_text())
    save = (
        "$torch.save({{k: v.detach().cpu() for k, v in @network.module.named_parameters()}}, "
        "@bundle_root + '/{}' + str(torch.distributed.get_rank()) + '.pt')"
    )
    overlay = {"+initialize": [save.format("initial")], "finalize": [save.format("final"), *own["finalize"]]}
    path = folder / "save_each_rank.json"
    path.write_text(json.dumps(overlay))
    return path


@pytest.mark.parametrize("name", pipelines("train.json", "multi_gpu_train.json"))  # others: a U-Net's, another network
def test_two_processes_train_the_same_weights(name, data, tmp_path):
    bundle = BUNDLES_DIR / name
    configs = [
        str(bundle / "configs" / "train.json"),
        str(bundle / "configs" / "multi_gpu_train.json"),
        str(_save_each_rank(bundle, tmp_path)),
    ]
    (tmp_path / "run").mkdir()
    overrides = {
        "bundle_root": tmp_path / "run",
        "dataset_dir": data,
        "num_workers": 0,
        "patch_size": _patch(name, 2),
        "batch_size": 2,
        "train#trainer#max_epochs": 1,
        "val_interval": 1,
        **FAST.get(name, {}),
    }
    args = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(configs),
        "--meta_file",
        str(bundle / "configs" / "metadata.json"),
        "--logging_file",
        str(bundle / "configs" / "logging.conf"),
    ]
    for key, value in overrides.items():
        args += [f"--{key}", str(value)]
    proc = forkserver.run(args, cwd=bundle, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-6000:]

    run = tmp_path / "run"
    initial = [torch.load(run / f"initial{r}.pt", weights_only=True) for r in (0, 1)]
    final = [torch.load(run / f"final{r}.pt", weights_only=True) for r in (0, 1)]
    assert final[0].keys() == final[1].keys() and len(final[0]) > 0
    for k in final[0]:
        torch.testing.assert_close(
            final[0][k], final[1][k], rtol=0, atol=1e-6, msg=f"{name}: {k} differs between the ranks"
        )
    moved = [k for k in final[0] if not torch.equal(final[0][k], initial[0][k])]
    assert moved, (
        f"{name}: no parameter changed"
    )  # (MedSegDiff's zero-initialised output convolutions let few move in 2 steps)
    assert (run / "models" / "model.pt").is_file()  # rank 0's validation saved the best model
