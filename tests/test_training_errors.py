"""A failure inside training ends in one line in the user's terms (the setting, the case, what to change), never
in ignite's and MONAI's tracebacks; ``MONAI_EXT_TRACEBACK=1`` keeps the trace."""

import os
import sys
from types import SimpleNamespace

import forkserver
import pytest
import torch
from conftest import BUNDLES_DIR
from monai.data import MetaTensor

from monai_ext.handlers import TrainingError, TrainingErrors


def _engine(batch=None):
    return SimpleNamespace(state=SimpleNamespace(epoch=3, iteration=41, batch=batch))


def _batch(values, names):
    label = MetaTensor(torch.stack([torch.full((1, 4, 4), float(v)) for v in values]), meta={"filename_or_obj": names})
    return {"image": torch.zeros(len(values), 1, 4, 4), "label": label}


def test_the_trainers_own_failure_handlers_run_before_the_one_line():
    from ignite.engine import Engine, Events

    kept = []
    engine = Engine(lambda e, b: (_ for _ in ()).throw(RuntimeError("boom\nsecond line")))
    handler = TrainingErrors(out_channels=2, patch_size=[4, 4], batch_size=1)
    handler.attach(engine)

    @engine.on(Events.EXCEPTION_RAISED)
    def keep_last_weights(engine, e):  # as BundleCheckpointSaver does, then re-raises
        kept.append(engine.state.iteration)
        raise e

    with pytest.raises(
        TrainingError, match=r"^training failed at epoch 1, iteration 1: RuntimeError: boom \(MONAI_EXT"
    ):
        handler.run(_Runner(engine))
    assert kept and set(kept) == {1}  # ignite fires the failure handlers at each level it unwinds


class _Runner:
    """A trainer as the bundles' ``run`` calls it: ``run()`` with its data and epochs set."""

    def __init__(self, engine):
        self.engine, self.state, self.logger = engine, engine.state, engine.logger

    def run(self):
        self.engine.run([0, 1], max_epochs=1)
        self.state = self.engine.state


def test_a_label_value_without_a_channel_names_the_case_and_the_setting_before_the_step():
    handler = TrainingErrors(out_channels=3, patch_size=[4, 4], batch_size=2)
    handler._check_labels(_engine(_batch([2, 1], ["a.nii.gz", "b.nii.gz"])))  # within 0..2: nothing
    with pytest.raises(
        TrainingError, match=r"^b\.nii\.gz: label value 4, but out_channels is 3 .* set out_channels to 5"
    ):
        handler._check_labels(_engine(_batch([1, 4], ["a.nii.gz", "b.nii.gz"])))


def test_out_of_memory_names_batch_patches_and_patch_size():
    handler = TrainingErrors(out_channels=3, patch_size=[96, 112, 96], batch_size=8, num_samples=4)
    with pytest.raises(TrainingError) as raised:
        handler._raised(
            _engine(_batch([0], ["x.nii.gz"])), torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        )
    message = str(raised.value)
    assert "out of memory at epoch 3, iteration 41 (cases x.nii.gz)" in message
    assert "batch_size 8 x num_samples 4 patches of [96, 112, 96]: lower batch_size" in message and "\n" not in message
    cpu = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes"
    )
    with pytest.raises(TrainingError, match="out of memory"):
        handler._raised(_engine(), cpu)


def test_an_error_in_a_data_loader_worker_is_told_by_its_own_line():
    handler = TrainingErrors(out_channels=2, patch_size=[8, 8], batch_size=2)
    worker = RuntimeError(
        "Caught KeyError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    d["label"]\nKeyError: \'label\'\n'
    )
    with pytest.raises(
        TrainingError, match=r"^training failed at epoch 3, iteration 41: KeyError: 'label' \(MONAI_EXT_TRACEBACK=1"
    ):
        handler._raised(_engine(), worker)


def _train(overrides, env=None, timeout=600):
    args = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        "configs/train.json",
        "--train#trainer#max_epochs",
        "1",
    ]
    for key, value in overrides.items():
        args += [f"--{key}", str(value)]
    return forkserver.run(args, cwd=BUNDLES_DIR / "unet", timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_bundle_training_errors_are_one_line_through_monai_bundle_run(tmp_path):
    from monai_ext.data import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "data", num_cases=6, spatial_dims=3, size=(24, 20, 16), seed=3).parent
    common = {
        "bundle_root": tmp_path / "run",
        "dataset_dir": data,
        "spatial_dims": 3,
        "patch_size": "[16,16,16]",
        "batch_size": 2,
    }
    # the synthetic labels are 0..2: two output channels leave label 2 without one
    proc = _train({**common, "num_workers": 0, "out_channels": 2})
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and len(errors) == 1, proc.stderr[-3000:]
    assert "label value 2, but out_channels is 2" in errors[0] and ".nii.gz" in errors[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    # stopped inside its first epoch: no weights that look like a result, no empty TensorBoard file
    assert (
        not (tmp_path / "run" / "models" / "model_last.pt").exists()
        and not (tmp_path / "run" / "models" / "model.pt").exists()
    )
    assert not list((tmp_path / "run").rglob("events.out.tfevents*"))
    # a training transform that turns non-cubic patches, in a data-loader worker: the batch cannot be stacked
    rotate = "{'_target_': 'RandRotate90d', 'keys': ['image', 'label'], 'prob': 0.5, 'max_k': 3}"
    uneven = {
        **common,
        "num_workers": 1,
        "patch_size": "[16,32,16]",
        "num_samples": 4,
        "train#random_transforms#2": rotate,
    }
    proc = _train(uneven)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and len(errors) == 1, proc.stderr[-3000:]
    assert "cannot be stacked" in errors[0] and "patch_size [16, 32, 16]" in errors[0]
    assert "Traceback" not in proc.stdout + proc.stderr and "dev_collate" not in proc.stdout + proc.stderr
    assert len((proc.stdout + proc.stderr).splitlines()) < 60
    # the trace on demand
    proc = _train(uneven, env={"MONAI_EXT_TRACEBACK": "1"})
    assert proc.returncode != 0 and "Traceback (most recent call last)" in proc.stderr


BAD_SETTINGS = [
    ({"time_budget": "abc"}, "time_budget: 'abc' is not a number"),
    ({"time_budget": -1}, "time_budget: -1; it must be more than 0"),
    ({"batch_size": 0}, "batch_size: 0; it must be at least 1"),
    ({"batch_size": 2.5}, "batch_size: 2.5 is not a whole number"),
    ({"patch_size": "[64,64]", "spatial_dims": 3}, "patch_size: [64, 64] has 2 size(s) where spatial_dims is 3"),
    ({"train#trainer#max_epochs": 0}, "max_epochs: 0; it must be at least 1"),
    ({"learning_rate": "-0.01"}, "learning_rate: -0.01; it must be more than 0"),
    ({"num_workers": -2}, "num_workers: -2; it must be at least 0"),
    ({"spatial_dims": 4}, "spatial_dims: 4; it must be 2 or 3"),
]


@pytest.mark.parametrize(
    "overrides, message", BAD_SETTINGS, ids=[m.split(":")[0] + " " + str(list(o.values())[0]) for o, m in BAD_SETTINGS]
)
def test_a_setting_that_cannot_work_is_one_line_naming_the_key_before_anything_is_built(tmp_path, overrides, message):
    proc = _train({"bundle_root": tmp_path / "run", "dataset_dir": tmp_path / "nowhere", **overrides}, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and len(errors) == 1 and errors[0].startswith(f"error: {message}"), proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "run").exists()  # nothing written: no models/, no event file


@pytest.mark.parametrize("bundle", ["unetplusplus", "resunet", "resunetplusplus", "madgnet", "medsegdiff", "higmisnet"])
def test_every_bundle_checks_its_training_settings(tmp_path, bundle):
    args = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        "configs/train.json",
        "--bundle_root",
        str(tmp_path / "run"),
        "--dataset_dir",
        str(tmp_path / "nowhere"),
        "--batch_size",
        "0",
    ]
    proc = forkserver.run(args, cwd=BUNDLES_DIR / bundle, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and errors == ["error: batch_size: 0; it must be at least 1"], proc.stderr[-3000:]
    multi = args[:5] + ["['configs/train.json','configs/multi_gpu_train.json']"] + args[6:]
    proc = forkserver.run(multi, cwd=BUNDLES_DIR / bundle, timeout=300)
    assert "error: batch_size: 0; it must be at least 1" in proc.stderr.splitlines(), proc.stderr[-3000:]
