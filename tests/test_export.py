"""``export`` writes a self-contained bundle: settings baked in, metadata from the training run, large files
listed with their SHA-256, the data licence, and the code the configs need (checked where monai_ext is not
installed). The model zoo's own ``ci/verify_bundle.py`` runs on exports when its folder is given."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import BUNDLES_DIR, LIGHT
from monai.bundle import ConfigParser

from monai_ext.bundle import with_record
from monai_ext.bundle.export import ExportError, export_bundle
from monai_ext.bundle.zoo_style import style_findings

ROOT = Path(__file__).resolve().parents[1]
SOURCE = {
    "name": "PROMISE12",
    "url": "https://promise12.grand-challenge.org/",
    "terms": None,
    "citation": "Litjens G. et al. 2014.",
}


def _trained(name: str, root: Path, settings: dict, metric: float = 0.81, confident: bool = False) -> Path:
    """Weights of the bundle's network for ``settings``, recorded as training records them, and an evaluation.
    ``confident``: the last layer's bias makes the network label every voxel background, far from any other
    label, as a network that quantises to int8 does (random weights do not)."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLES_DIR / name / "configs" / "inference.json"))
    parser.update(settings)
    net = parser.get_parsed_content("network_def")
    if confident:
        bias = [p for n, p in net.named_parameters() if n.endswith("bias")][-1]
        with torch.no_grad():
            bias.copy_(torch.tensor([20.0] + [-20.0] * (len(bias) - 1)))
    recorded = {
        k: settings.get(k, parser.get_parsed_content(k))
        for k in ("spatial_dims", "in_channels", "out_channels", "class_names", "patch_size")
    }
    (root / "models").mkdir(parents=True)
    state = with_record(
        net.state_dict(), recorded, metric={"name": "val_mean_dice", "value": metric, "epoch": 7}, data_source=SOURCE
    )
    torch.save(state, root / "models" / "model.pt")
    (root / "eval").mkdir()
    (root / "eval" / "metrics_summary.json").write_text(
        json.dumps({"cases": 3, "metrics": {"dice_prostate": {"mean": 0.8123, "std": 0.1}}})
    )
    return root / "models" / "model.pt"


def _without_monai_ext(python, cwd, script: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [str(python), "-c", script, *args], capture_output=True, text=True, cwd=cwd, timeout=600, env=env
    )


SELF_CHECK = """
import sys
from monai.bundle import verify_net_in_out
from monai.bundle.workflows import ConfigWorkflow
w = ConfigWorkflow(config_file="configs/inference.json", meta_file="configs/metadata.json", logging_file=False,
                   workflow_type="infer", bundle_root=".", dataset_dir="/nonexistent")
w.initialize()
assert not w.check_properties(), w.check_properties()
verify_net_in_out(
    net_id="network_def", meta_file="configs/metadata.json", config_file="configs/inference.json", bundle_root=".", device="cpu"
)
import monai_ext
assert monai_ext.__file__.startswith(sys.argv[1]), monai_ext.__file__
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,settings",
    [
        (
            "madgnet",
            {
                "spatial_dims": 2,
                "patch_size": [64, 64],
                "out_channels": 2,
                "class_names": {"0": "background", "1": "prostate"},
            },
        ),
        (
            "medsegdiff",
            {
                "spatial_dims": 3,
                "patch_size": [16, 16, 16],
                "out_channels": 2,
                "class_names": {"0": "background", "1": "prostate"},
            },
        ),
    ],
)
def test_export_bakes_the_training_into_a_bundle_that_runs_without_monai_ext(
    name, settings, tmp_path, python_without_monai_ext, monkeypatch
):
    weights = _trained(name, tmp_path / "run", {**settings, **LIGHT.get(name, {})})
    out = export_bundle(
        BUNDLES_DIR / name,
        tmp_path / f"{name}_prostate",
        checkpoint=weights,
        overrides=LIGHT.get(name),
        large_files_url="https://example.org/b",
    )
    inference = json.loads((out / "configs" / "inference.json").read_text())
    assert "trained" not in inference and not [
        k for k, v in inference.items() if isinstance(v, str) and "@trained" in v
    ]
    assert inference["spatial_dims"] == settings["spatial_dims"] and inference["class_names"] == settings["class_names"]
    assert (
        inference["dataset_dir"]
        == json.loads((BUNDLES_DIR / name / "configs" / "inference.json").read_text())["dataset_dir"]
    )
    train = json.loads((out / "configs" / "train.json").read_text())
    assert (
        train["patch_size"] == settings["patch_size"] and train["out_channels"] == 2
    )  # fine-tuning starts from the same settings
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    assert meta["version"] == "0.2.1" and "val_mean_dice 0.8100" in meta["changelog"]["0.2.1"]
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == settings["class_names"]
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == settings["patch_size"]
    assert meta["eval_metrics"] == {"mean_dice_prostate": 0.8123} and meta["supported_apps"] == {"monai-label": "0.8.5"}
    assert "monai-ext" not in meta["required_packages_version"] and meta["data_source"].startswith("PROMISE12")
    assert "PROMISE12" in (out / "docs" / "data_license.txt").read_text()
    # every weight file, whatever its size, so that a zoo pull request can leave them out
    listed = {e["path"]: e for e in yaml.safe_load((out / "large_files.yml").read_text())["large_files"]}
    assert {"models/model.pt", "models/model.pt2"} <= set(listed)
    assert all(p.startswith(("models/model.pt", "models/compiled/")) for p in listed)
    entry = listed["models/model.pt"]
    assert entry["url"] == "https://example.org/b/models/model.pt"
    assert (
        entry["hash_type"] == "sha256"
        and entry["hash_val"] == hashlib.sha256((out / "models" / "model.pt").read_bytes()).hexdigest()
    )
    readme = (out / "docs" / "README.md").read_text()
    assert f"bundles/{name}" not in readme and "../../" not in readme and "From this folder" in readme
    assert "Last evaluation: mean_dice_prostate 0.8123" in readme and "Trained on PROMISE12" in readme
    nets = {p.stem for p in (out / "monai_ext" / "networks" / "nets").glob("*.py")} - {"__init__"}
    assert nets == {"madgnet": {"madgnet", "resnest"}, "medsegdiff": {"medsegdiff"}}[name]  # the code it uses, only
    assert style_findings(out, set(listed)) == []  # the zoo's isort, black, flake8 and pre-commit hooks
    big = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.stat().st_size > 1024 * 1024}
    assert big <= set(listed)  # what the zoo's 1 MB rule would refuse is what a pull request leaves out
    proc = _without_monai_ext(python_without_monai_ext, out, SELF_CHECK, str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the torch.export program: loaded and run where neither monai_ext nor the bundle's code is importable
    shape = [2, meta["network_data_format"]["inputs"]["image"]["num_channels"], *settings["patch_size"]]
    proc = _without_monai_ext(
        python_without_monai_ext, tmp_path, PROGRAM_CHECK, str(out / "models" / "model.pt2"), json.dumps(shape)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    net = ConfigParser(json.loads((out / "configs" / "inference.json").read_text())).get_parsed_content("network_def")
    net.load_state_dict(torch.load(out / "models" / "model.pt", weights_only=True))
    x = torch.load(tmp_path / "program_input.pt")
    with torch.no_grad():
        expected = net.eval()(x)
    found = torch.load(tmp_path / "program_output.pt")
    torch.testing.assert_close(found, expected, atol=1e-4 * float(expected.abs().max()), rtol=1e-4)
    assert "`torch.export.load('models/model.pt2').module()(x)` runs it" in readme
    # the network compiled for OpenVINO and ONNX Runtime, MedSegDiff's denoiser with its timestep input as its
    # sampler calls it: one file each, loaded as it is
    compiled = out / "models" / "compiled"
    assert sorted(p.suffix for p in compiled.iterdir()) == [".bin", ".onnx", ".xml"]
    assert "holds the network compiled for `--backend openvino`, `--backend onnxruntime` (" in readme
    no_data = "no windows" if name == "madgnet" else "MedSegDiff takes 2 inputs"  # int8: named, not shipped
    assert "Not compiled: `--backend openvino` (int8): precision int8: " in readme and no_data in readme
    import openvino

    from monai_ext.inferers import CompiledNetwork

    monkeypatch.setattr(openvino, "convert_model", lambda *a, **k: pytest.fail("converted again"))
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: pytest.fail("exported again"))
    batch = ConfigParser(json.loads((out / "configs" / "inference.json").read_text())).get_parsed_content(
        "sw_batch_size"
    )
    inputs = (x[:1],) + ((torch.tensor([999]),) if name == "medsegdiff" else ())
    with torch.no_grad():
        expected = net(*inputs)
        for backend in ("openvino", "onnxruntime"):
            found = CompiledNetwork(net, backend, cache_dir=compiled, batch_size=batch)(*inputs)
            torch.testing.assert_close(found, expected, atol=1e-4 * float(expected.abs().max()), rtol=1e-4)


PROGRAM_CHECK = """
import json, sys
import torch
program = torch.export.load(sys.argv[1]).module()
x = torch.randn(json.loads(sys.argv[2]))
with torch.no_grad():
    y = program(x)
assert "monai_ext" not in sys.modules
torch.save(x, "program_input.pt")
torch.save(y, "program_output.pt")
"""


def test_a_local_export_lists_its_weights_without_an_address_and_says_it_has_no_scores(tmp_path, caplog, monkeypatch):
    from monai_ext.data import make_synthetic_dataset

    weights = _trained("unet", tmp_path / "run", {"spatial_dims": 3, "patch_size": [16, 16, 16]}, confident=True)
    shutil.rmtree(tmp_path / "run" / "eval")  # trained, never evaluated
    # the data set it was trained on: its validation cases calibrate int8, as segment --precision int8 does
    datalist = make_synthetic_dataset(tmp_path / "data", num_cases=4, spatial_dims=3, size=(24, 20, 16), seed=0)
    data = {"dataset_dir": str(datalist.parent), "datalist_file": str(datalist)}
    with caplog.at_level("WARNING", logger="monai_ext.export"):
        out = export_bundle(
            BUNDLES_DIR / "unet", tmp_path / "unet_local", checkpoint=weights, overrides=data, local_only=True
        )
    listed = yaml.safe_load((out / "large_files.yml").read_text())["large_files"]
    compiled = sorted(p.name.split("-")[0] + p.suffix for p in (out / "models" / "compiled").iterdir())
    assert compiled == ["network.onnx", "openvino.bin", "openvino.bin", "openvino.xml", "openvino.xml"]  # and int8
    assert len(list((out / "models" / "compiled").glob("openvino-int8-*.xml"))) == 1
    assert sorted(e["path"] for e in listed) == sorted(
        ["models/model.pt", "models/model.pt2"]
        + [f"models/compiled/{p.name}" for p in (out / "models" / "compiled").iterdir()]
    )
    assert all(e["url"] == "" and len(e["hash_val"]) == 64 for e in listed)
    # the bundle's pipeline on the CPU backends loads them: nothing is converted or exported again
    import openvino

    from monai_ext.inferers import CompiledNetwork

    parser = ConfigParser(json.loads((out / "configs" / "inference.json").read_text()))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(out / "models" / "model.pt", weights_only=True))
    batch = parser.get_parsed_content("sw_batch_size")
    monkeypatch.setattr(openvino, "convert_model", lambda *a, **k: pytest.fail("converted again"))
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: pytest.fail("exported again"))
    x = torch.randn(1, 1, 16, 16, 16)  # fewer windows than the compiled batch: padded to it
    with torch.no_grad():
        expected = net.eval()(x)
        for backend in ("openvino", "onnxruntime"):
            run = CompiledNetwork(net, backend, cache_dir=out / "models" / "compiled", batch_size=batch)
            torch.testing.assert_close(run(x), expected, atol=1e-4, rtol=1e-4)
        int8 = CompiledNetwork(
            net,
            "openvino",
            "int8",
            cache_dir=out / "models" / "compiled",
            calibration=lambda: pytest.fail("calibrated again"),
            batch_size=batch,
        )
        assert torch.equal(int8(x).argmax(1), expected.argmax(1))
    assert (
        "holds the network compiled for `--backend openvino`, `--backend onnxruntime`, `--backend openvino` (int8)"
        in (out / "docs" / "README.md").read_text()
    )
    assert json.loads((out / "configs" / "metadata.json").read_text())["eval_metrics"] == {}
    assert any("eval_metrics is empty" in r.getMessage() for r in caplog.records)
    readme = (out / "docs" / "README.md").read_text()
    assert "No evaluation was recorded" in readme and "a local export" in readme and "../../" not in readme


def test_export_refuses_what_it_cannot_do_well(tmp_path):
    bundle = BUNDLES_DIR / "unet"
    with pytest.raises(ExportError, match="missing checkpoint"):
        export_bundle(bundle, tmp_path / "out", checkpoint=tmp_path / "none.pt")
    weights = _trained("unet", tmp_path / "run", {"spatial_dims": 3, "patch_size": [16, 16, 16]})
    with pytest.raises(ExportError, match="spatial_dims: trained 3, configured 2"):
        export_bundle(bundle, tmp_path / "out", checkpoint=weights, overrides={"spatial_dims": 2}, local_only=True)
    with pytest.raises(ExportError, match="no large_files_url: a model-zoo pull request leaves the weights out"):
        export_bundle(bundle, tmp_path / "out", checkpoint=weights)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("keep me")
    with pytest.raises(ExportError, match="exists and is not empty"):
        export_bundle(bundle, tmp_path / "taken", checkpoint=weights)
    assert (tmp_path / "taken" / "file").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "taken"]  # no half-written export left


ZOO_CI = os.environ.get("MONAI_EXT_ZOO_CI")


@pytest.mark.slow
@pytest.mark.skipif(
    not ZOO_CI, reason="set MONAI_EXT_ZOO_CI to the model zoo's ci/ folder (its code is not part of this repository)"
)
def test_the_model_zoos_verify_bundle_passes_on_an_export(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "zoo" / "check_export.py"),
            "--zoo-ci",
            ZOO_CI,
            "--bundles",
            "unet",
            "--work",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_export_checks_its_set_values_as_segment_does(unet_3d_with_settings, tmp_path):
    from monai_ext.errors import InputError

    with pytest.raises(InputError, match=r"--set nope=1: the bundle's config has no 'nope'"):
        export_bundle(unet_3d_with_settings, tmp_path / "out", overrides={"nope": 1}, local_only=True)
    with pytest.raises(InputError, match=r"--set sw_batch_size=\"four\": expected a number"):
        export_bundle(unet_3d_with_settings, tmp_path / "out", overrides={"sw_batch_size": "four"}, local_only=True)
    assert not (tmp_path / "out").exists()


def test_set_may_give_a_constructor_argument_that_the_config_leaves_at_its_default():
    """``--set network_def#backbone_layers=[1,1,1,1]`` sets an argument of the network's constructor, as
    ``monai.bundle run`` does; a name the constructor does not take is still refused."""
    from monai_ext.bundle.overrides import check_overrides
    from monai_ext.errors import InputError

    madgnet = [BUNDLES_DIR / "madgnet" / "configs" / "inference.json"]
    check_overrides(madgnet, {"network_def#backbone_layers": [1, 1, 1, 1]})
    check_overrides([BUNDLES_DIR / "unet" / "configs" / "inference.json"], {"network_def#dropout": 0.1})  # MONAI's UNet
    with pytest.raises(InputError, match=r"the bundle's config has no 'network_def#backbone_layerz'"):
        check_overrides(madgnet, {"network_def#backbone_layerz": [1, 1, 1, 1]})


def test_the_zoo_style_check_names_what_the_zoos_hooks_would_refuse(tmp_path):
    """style_findings runs the zoo's formatters, flake8 and content hooks: each kind of problem is found, in its
    file; a large file that large_files.yml lists (a pull request leaves it out) is not."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "metadata.json").write_text('{\n  "version": "0.1.0"\n}\n')  # 2 spaces
    (tmp_path / "large_files.yml").write_text("large_files: [\n")
    (tmp_path / "LICENSE").write_text("Licensed  \n")
    (tmp_path / "code.py").write_text('"""A module."""\nimport os\n')
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.pt").write_bytes(b"0" * (2 << 20))
    (tmp_path / "models" / "extra.bin").write_bytes(b"0" * (2 << 20))
    findings = "\n".join(style_findings(tmp_path, {"models/model.pt"}))
    assert "F401 'os' imported but unused" in findings
    assert "configs/metadata.json: not as pretty-format-json writes it" in findings
    assert "large_files.yml" in findings  # YAML that does not parse
    assert "LICENSE" in findings  # trailing white space
    assert "models/extra.bin: over 1024 KB" in findings and "model.pt:" not in findings
    (tmp_path / "models" / "extra.bin").unlink()
    (tmp_path / "configs" / "metadata.json").write_text('{\n    "version": "0.1.0"\n}\n')
    (tmp_path / "large_files.yml").write_text("large_files: []\n")
    (tmp_path / "LICENSE").write_text("Licensed\n")
    (tmp_path / "code.py").write_text('"""A module."""\n\nimport os\n\nprint(os.sep)\n')
    assert style_findings(tmp_path, {"models/model.pt"}) == []
