"""Every bundle's network runs on OpenVINO, ONNX Runtime and as a torch.export program with the logits of PyTorch
eager (fp32, 1e-4),
through ``CompiledNetwork``, which the bundles' ``inference.json`` uses; compiled models are cached."""

from pathlib import Path

import pytest
import torch
from conftest import BUNDLES, BUNDLES_DIR, LIGHT
from monai.bundle import ConfigParser

from monai_ext.errors import InputError
from monai_ext.inferers import CompiledNetwork, cpu_has_native_bf16

ROOT = Path(__file__).resolve().parents[1]
PATCH = {2: [32, 32], 3: [16, 16, 16]}
PATCH_32 = {2: [32, 32], 3: [32, 32, 32]}  # MADGNet down-samples 5 times


def _network(name: str, dims: int):
    parser = ConfigParser()
    parser.read_config(str(BUNDLES_DIR / name / "configs" / "inference.json"))
    patch = (PATCH_32 if name == "madgnet" else PATCH)[dims]
    parser.update({"spatial_dims": dims, "patch_size": patch, "bundle_root": "/nonexistent", **LIGHT.get(name, {})})
    net = parser.get_parsed_content("network_def").eval()
    channels = parser.get_parsed_content("network_in_channels")
    x = torch.randn(2, channels, *patch)
    inputs = (x, torch.tensor([999, 3])) if name == "medsegdiff" else (x,)  # the denoiser takes its timestep
    return net, inputs


# every bundle in 2D and 3D on OpenVINO and in 2D on ONNX Runtime and as a torch.export program; ONNX Runtime
# in 3D for the U-Net, and MADGNet's refusal (the ONNX export is the same code for every network and
# dimension: it keeps CI short); the program in 3D for the U-Net
CASES = [
    (n, d, b)
    for n in BUNDLES
    for d in (2, 3)
    for b in ("openvino", "onnxruntime", "pt2")
    if b == "openvino" or d == 2 or n == "unet" or (n, b) == ("madgnet", "onnxruntime")
]
SUFFIX = {"openvino": "*.xml", "onnxruntime": "*.onnx", "pt2": "*.pt2"}


@pytest.mark.parametrize("name,dims,backend", CASES)
def test_every_bundle_runs_on_the_cpu_backends_with_eager_logits(name, dims, backend, tmp_path):
    torch.set_num_threads(1)
    net, inputs = _network(name, dims)
    if (name, dims, backend) == ("madgnet", 3, "onnxruntime"):  # 3D adaptive pooling: neither ONNX exporter has it
        with pytest.raises(
            InputError, match=r"backend onnxruntime: MADGNet does not export to ONNX .*; use the openvino backend"
        ):
            CompiledNetwork(net, backend, cache_dir=tmp_path)(*inputs)
        return
    with torch.no_grad():
        expected = net(*inputs)
        compiled = CompiledNetwork(net, backend, cache_dir=tmp_path)
        torch.testing.assert_close(compiled(*inputs), expected, atol=1e-4, rtol=1e-4)
        one = tuple(x[:1] for x in inputs)  # the last, smaller batch of a sliding window
        torch.testing.assert_close(compiled(*one), expected[:1], atol=1e-4, rtol=1e-4)
        three = tuple(torch.cat([x, x[:1]]) for x in inputs)  # more windows than the compiled batch
        torch.testing.assert_close(compiled(*three), torch.cat([expected, expected[:1]]), atol=1e-4, rtol=1e-4)
    assert len(list(tmp_path.glob(SUFFIX[backend]))) == 1
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing left under a temporary name


def test_compiled_models_are_cached_by_weights_and_window(tmp_path, monkeypatch):
    net, (x,) = _network("unet", 2)
    with torch.no_grad():
        CompiledNetwork(net, "openvino", cache_dir=tmp_path)(x)
        files = sorted(p.name for p in tmp_path.iterdir())
        assert len(files) == 2  # the OpenVINO model (.xml, .bin)

        import openvino

        monkeypatch.setattr(openvino, "convert_model", lambda *a, **k: pytest.fail("converted again"))
        again = CompiledNetwork(net, "openvino", cache_dir=tmp_path)  # a second run: loads, exports nothing
        torch.testing.assert_close(again(x), net(x), atol=1e-4, rtol=1e-4)
        monkeypatch.undo()
        CompiledNetwork(net, "openvino", cache_dir=tmp_path)(torch.randn(1, 1, 48, 48))  # another window: another model
        torch.manual_seed(1)
        other, _ = _network("unet", 2)
        changed = CompiledNetwork(net, "openvino", cache_dir=tmp_path)
        changed.load_state_dict(other.state_dict())  # other weights: another model, and the new weights' logits
        torch.testing.assert_close(changed(x), other(x), atol=1e-4, rtol=1e-4)
    assert len(list(tmp_path.glob("*.xml"))) == 3 and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_shipped_program_of_these_weights_runs_as_it_is_and_one_of_other_weights_is_not_used(tmp_path, monkeypatch):
    from monai_ext.inferers import export_program, save_program, weights_digest

    net, (x,) = _network("unet", 2)
    models = tmp_path / "models"
    save_program(export_program(net, (x,)), models / "model.pt2", weights_digest(net))  # as an export ships it
    with torch.no_grad():
        monkeypatch.setattr(torch.export, "export", lambda *a, **k: pytest.fail("exported again"))
        shipped = CompiledNetwork(net, "pt2", cache_dir=models / "compiled")
        torch.testing.assert_close(shipped(x), net(x), atol=1e-4, rtol=1e-4)
        monkeypatch.undo()
        assert not (models / "compiled").exists()
        torch.manual_seed(1)
        other, _ = _network("unet", 2)
        retrained = CompiledNetwork(other, "pt2", cache_dir=models / "compiled")
        torch.testing.assert_close(retrained(x), other(x), atol=1e-4, rtol=1e-4)  # not the shipped program's
    assert len(list((models / "compiled").glob("program-*.pt2"))) == 1


def test_the_wrapper_carries_the_networks_weights_under_their_own_names(tmp_path, monkeypatch):
    net, (x,) = _network("unet", 2)
    compiled = CompiledNetwork(net, "onnxruntime")
    assert list(compiled.state_dict()) == list(net.state_dict())  # a bundle's checkpoint loads as into the network
    compiled.load_state_dict(net.state_dict())
    import tempfile

    made = []
    real_mkdtemp = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: made.append(real_mkdtemp(*a, **k)) or made[-1])
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), net(x), atol=1e-4, rtol=1e-4)
    assert len(made) == 1 and not Path(made[0]).exists()  # without a cache folder the export is temporary and removed
    med, _ = _network("medsegdiff", 2)
    wrapped = CompiledNetwork(med, "openvino")
    assert wrapped.mask_channels == med.mask_channels and not hasattr(
        wrapped, "encode_image"
    )  # the sampler calls the backend


def test_options_that_cannot_work_are_one_line():
    net, inputs = _network("unet", 2)
    with pytest.raises(InputError, match=r"backend 'tensorrt': one of torch, pt2, openvino, onnxruntime"):
        CompiledNetwork(net, "tensorrt")
    with pytest.raises(
        InputError, match=r"channels_last: a torch backend option; the openvino backend chooses its own"
    ):
        CompiledNetwork(net, "openvino", channels_last=True)
    with pytest.raises(InputError, match=r"channels_last: a torch backend option; the pt2 backend chooses its own"):
        CompiledNetwork(net, "pt2", channels_last=True)
    with pytest.raises(InputError, match=r"precision 'int8': the pt2 backend runs fp32"):
        CompiledNetwork(net, "pt2", "int8")
    with pytest.raises(InputError, match=r"precision 'int8': the onnxruntime backend runs fp32"):
        CompiledNetwork(net, "onnxruntime", "int8")
    with pytest.raises(InputError, match=r"precision int8: no calibration cases"):
        CompiledNetwork(net, "openvino", "int8")(*inputs)
    med, med_inputs = _network("medsegdiff", 2)
    with pytest.raises(InputError, match=r"precision int8: MedSegDiff takes 2 inputs"):
        CompiledNetwork(med, "openvino", "int8", calibration=lambda: [med_inputs[0][:1]])(*med_inputs)
    if not cpu_has_native_bf16():
        with pytest.raises(InputError, match=r"precision bf16: this CPU has no native bfloat16"):
            CompiledNetwork(net, "torch", "bf16")(*inputs)


def test_a_backend_that_is_not_installed_names_the_package(monkeypatch):
    import importlib.util

    from monai_ext.errors import MissingPackageError, ReportedError

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("openvino", "nncf") else find_spec(name, *a)
    )
    net, _ = _network("unet", 2)
    with pytest.raises(
        MissingPackageError, match=r"backend openvino: openvino, nncf not installed \(pip install -r requirements.txt\)"
    ) as e:
        CompiledNetwork(net, "openvino", "int8")
    assert isinstance(e.value, ImportError) and isinstance(e.value, ReportedError)  # caught as either


def test_int8_is_calibrated_on_the_bundles_cases_and_cached(tmp_path):
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    from monai_ext.data import make_synthetic_dataset
    from monai_ext.inferers import calibration_windows

    data = make_synthetic_dataset(tmp_path / "data", num_cases=4, spatial_dims=2, size=(48, 40), seed=0)
    import json

    cases = [{"image": str(data.parent / c["image"])} for c in json.loads(data.read_text())["validation"]]
    windows = calibration_windows(
        cases, Compose([LoadImaged("image"), EnsureChannelFirstd("image")]), [32, 32], windows_per_case=4
    )
    assert len(windows) == 4 * min(4, len(cases)) and windows[0].shape == (1, 1, 32, 32)
    net, _ = _network("unet", 2)
    x = torch.cat(windows[-2:])  # windows of the data it was calibrated for
    with torch.no_grad():
        quantised = CompiledNetwork(
            net, "openvino", "int8", cache_dir=tmp_path / "cache", calibration=lambda: windows, min_agreement=0.9
        )
        y, expected = quantised(x), net(x)
    assert y.shape == expected.shape
    assert torch.corrcoef(torch.stack([y.flatten(), expected.flatten()]))[0, 1] > 0.98  # close to fp32, not equal
    assert len(list((tmp_path / "cache").glob("openvino-int8-*.xml"))) == 1


def test_int8_is_refused_where_the_quantised_network_labels_otherwise(tmp_path):
    net, _ = _network("unet", 2)
    windows = [torch.randn(1, 1, 32, 32) for _ in range(4)]
    strict = CompiledNetwork(
        net, "openvino", "int8", cache_dir=tmp_path, calibration=lambda: windows, min_agreement=1.01
    )  # unreachable
    with pytest.raises(
        InputError,
        match=r"precision int8: UNet does not quantise: the int8 network gives the fp32 labels on [0-9.]+% of the "
        r"calibration windows' voxels \(at least 101% needed\); use fp32",
    ):
        strict(torch.cat(windows[:2]))
    assert not list(tmp_path.glob("openvino-int8-*"))  # a refused model is not cached
