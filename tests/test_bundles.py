"""Every bundle: offline metadata check, network shape check, and train -> evaluate -> infer -> export
through its own configs with ``python -m monai.bundle``, on a tiny synthetic data set."""

import json
import subprocess
import sys
from pathlib import Path

import forkserver
import nibabel as nib
import numpy as np
import onnxruntime
import pytest
import torch
from conftest import BUNDLES, BUNDLES_DIR, LIGHT
from monai.bundle import ConfigParser, onnx_export, verify_metadata, verify_net_in_out

from monai_ext.data import make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "schemas" / "meta_schema_20240725.json"
# sampling settings that keep the diffusion bundle's evaluation and inference to seconds
SAMPLER = {"num_inference_steps": 3, "ensemble": 2, "validate_steps": 3, "validate_ensemble": 2, "val_interval": 1}
FAST = {**LIGHT, "medsegdiff": {**LIGHT["medsegdiff"], **SAMPLER}}
# small patches keep the run to seconds; the networks are the bundles' own blocks (LIGHT: fewer or narrower)
PATCH = {2: "[32,32]", 3: "[16,16,16]"}
PATCH_32 = {2: "[32,32]", 3: "[32,32,32]"}  # MADGNet down-samples 5 times
ONNX_KWARGS = {
    "input_names": ["image"],
    "output_names": ["pred"],
    "dynamic_axes": {"image": {0: "batch"}, "pred": {0: "batch"}},
}


def _patch(name, dims):
    return (PATCH_32 if name == "madgnet" else PATCH)[dims]


def _bundle_run(bundle: Path, configs, **overrides) -> subprocess.CompletedProcess:
    args = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str([str(bundle / "configs" / c) for c in configs]),
    ]
    args += [
        "--meta_file",
        str(bundle / "configs" / "metadata.json"),
        "--logging_file",
        str(bundle / "configs" / "logging.conf"),
    ]
    for key, value in overrides.items():
        args += [f"--{key}", str(value)]
    proc = forkserver.run(args, cwd=bundle, timeout=600)
    assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return {
        2: make_synthetic_dataset(root / "syn2d", num_cases=8, spatial_dims=2, size=(40, 36), seed=1).parent,
        3: make_synthetic_dataset(root / "syn3d", num_cases=5, spatial_dims=3, size=(20, 16, 18), seed=2).parent,
    }


def test_vendored_schema_is_the_published_file():
    import hashlib

    assert hashlib.md5(SCHEMA.read_bytes()).hexdigest() == "76e1add273836515d0bbb3bc71962474"


@pytest.mark.parametrize("name", BUNDLES)
def test_metadata_and_network_checks(name, tmp_path):
    bundle = BUNDLES_DIR / name
    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(SCHEMA))
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
        device="cpu",
    )
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    assert set(meta["network_data_format"]["inputs"]) == {"image"}
    assert set(meta["network_data_format"]["outputs"]) == {"pred"}
    for pkg, version in meta["required_packages_version"].items():
        assert version and version[0].isdigit(), (pkg, version)


@pytest.mark.parametrize("name", BUNDLES)
def test_inference_and_train_configs_have_the_bundle_properties(name, data, tmp_path):
    from monai.bundle.workflows import ConfigWorkflow

    bundle = BUNDLES_DIR / name
    for config, kind in (("inference.json", "infer"), ("train.json", "train")):
        workflow = ConfigWorkflow(
            config_file=str(bundle / "configs" / config),
            meta_file=str(bundle / "configs" / "metadata.json"),
            logging_file=False,
            workflow_type=kind,
            bundle_root=str(tmp_path),  # the handlers it instantiates write logs there, not into the checkout
            dataset_dir=str(data[2]),
            num_workers=0,
        )
        workflow.initialize()
        assert not workflow.check_properties()  # None or empty: every required id present and referenced right
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    assert "network" in parser.config  # MONAI Label needs a top-level network id


@pytest.mark.parametrize("name", BUNDLES)
def test_train_evaluate_infer_export_2d(name, data, tmp_path):
    bundle = BUNDLES_DIR / name
    run_root = tmp_path / "run"
    common = {
        "bundle_root": run_root,
        "dataset_dir": data[2],
        "num_workers": 0,
        "patch_size": _patch(name, 2),
        **FAST.get(name, {}),
    }
    _bundle_run(bundle, ["train.json"], **common, **{"train#trainer#max_epochs": 1, "batch_size": 2})
    checkpoint = run_root / "models" / "model.pt"
    assert checkpoint.is_file()
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())  # a plain state dict, as the bundle spec asks
    # every bundle resumes with one option: the training state of epoch 1, then epoch 2 only
    last = run_root / "models" / "last.pt"
    epoch_length = torch.load(last, weights_only=True)["trainer"]["iteration"]
    proc = _bundle_run(
        bundle, ["train.json"], **common, **{"train#trainer#max_epochs": 2, "batch_size": 2, "resume_from": last}
    )
    assert "at epoch 1 of 2" in proc.stdout + proc.stderr
    assert torch.load(last, weights_only=True)["trainer"]["iteration"] == 2 * epoch_length
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)  # the best of the two epochs

    _bundle_run(bundle, ["train.json", "evaluate.json"], **common)
    report = run_root / "eval"
    summary = json.loads((report / "metrics_summary.json").read_text())
    datalist = json.loads((data[2] / "datalist.json").read_text())
    assert summary["cases"] == len(datalist["test"])
    assert (report / "metrics_per_case.csv").read_text().count("\n") == len(datalist["test"]) + 1
    assert len(list((report / "overlays").glob("*.png"))) == len(datalist["test"])

    _bundle_run(bundle, ["inference.json"], **common)
    for case in datalist["test"]:
        source = nib.load(str(data[2] / case["image"]))
        mask = nib.load(str(report / (Path(case["image"]).name.replace(".nii.gz", "_seg.nii.gz"))))
        assert mask.shape == source.shape
        np.testing.assert_allclose(mask.affine, source.affine)
        assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2}

    ts = tmp_path / "model.ts"
    shape = {
        k: v for k, v in FAST.get(name, {}).items() if k.startswith("network_def#")
    }  # the light networks' overrides
    proc = forkserver.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "ckpt_export",
            "network_def",
            "--filepath",
            str(ts),
            "--ckpt_file",
            str(checkpoint),
            "--meta_file",
            str(bundle / "configs" / "metadata.json"),
            "--config_file",
            str(bundle / "configs" / "inference.json"),
            "--patch_size",
            _patch(name, 2),
            *[a for k, v in shape.items() for a in (f"--{k}", json.dumps(v))],
        ],  # as trained (MedSegDiff's FF-Parsers)
        cwd=bundle,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    scripted = torch.jit.load(str(ts))
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["patch_size"] = json.loads(_patch(name, 2))
    parser.update(shape)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(state)
    net.eval()
    channels = json.loads((bundle / "configs" / "metadata.json").read_text())["network_data_format"]["inputs"]["image"][
        "num_channels"
    ]
    x = torch.randn(1, channels, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), atol=1e-4, rtol=1e-4)

    # ONNX through MONAI's onnx_export (the function `python -m monai.bundle onnx_export` runs), with the
    # converter arguments each bundle's README gives: named input/output and a dynamic batch axis
    onnx_file = tmp_path / "model.onnx"
    onnx_export(
        "network_def",
        filepath=str(onnx_file),
        ckpt_file=str(checkpoint),
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
        input_shape=[1, channels, 32, 32],
        patch_size=json.loads(_patch(name, 2)),
        converter_kwargs=ONNX_KWARGS,
        **shape,
    )
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"] and [o.name for o in session.get_outputs()] == ["pred"]
    x2 = torch.randn(2, channels, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"image": x2.numpy()})[0], net(x2).numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", BUNDLES)
def test_one_value_switches_to_3d(name, data, tmp_path):
    bundle = BUNDLES_DIR / name
    run_root = tmp_path / "run3d"
    common = {
        "bundle_root": run_root,
        "dataset_dir": data[3],
        "num_workers": 0,
        "patch_size": _patch(name, 3),
        "spatial_dims": 3,
        **FAST.get(name, {}),
    }
    _bundle_run(bundle, ["train.json"], **common, **{"train#trainer#max_epochs": 1, "batch_size": 1})
    _bundle_run(bundle, ["inference.json"], **common)
    datalist = json.loads((data[3] / "datalist.json").read_text())
    for case in datalist["test"]:
        source = nib.load(str(data[3] / case["image"]))
        mask = nib.load(str(run_root / "eval" / Path(case["image"]).name.replace(".nii.gz", "_seg.nii.gz")))
        assert mask.shape == source.shape and np.allclose(mask.affine, source.affine)
