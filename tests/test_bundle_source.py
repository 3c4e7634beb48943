"""The seven bundles come from one source (``bundle_source/``: a template and a delta per bundle): every
committed bundle file is its rendering, a delta that does not fit the template is refused in one line, and an
eighth architecture is one delta file that trains through ``python -m monai.bundle``."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import forkserver
import pytest
from conftest import BUNDLES_DIR
from monai.bundle import verify_metadata, verify_net_in_out

from monai_ext.bundle.render import REQUIRED, RenderError, bundle_names, render, render_all
from monai_ext.data import make_synthetic_dataset

SOURCE = Path(__file__).resolve().parents[1] / "bundle_source"
SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "meta_schema_20240725.json"


def test_every_committed_bundle_file_is_its_rendering_from_the_source():
    assert bundle_names() == sorted(
        ["unet", "unetplusplus", "resunet", "resunetplusplus", "madgnet", "medsegdiff", "higmisnet"]
    )
    differ = render_all(check=True)
    assert not differ, f"{[str(p) for p in differ]} differ from bundle_source/: run python -m monai_ext.bundle.render"
    # and the check is a real one: a changed committed file is found, and the command says so
    proc = subprocess.run(
        [sys.executable, "-m", "monai_ext.bundle.render", "--check"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr


def test_no_config_refers_to_a_list_entry_by_its_place():
    """A list index is for rendering; at run time a reference such as ``@train#handlers#2`` moves to another
    entry where the list grows in front of it, as MONAI Label's CheckpointLoader, put first, makes it."""
    import re

    found = [
        f"{path.relative_to(BUNDLES_DIR)}: {m}"
        for path in sorted(BUNDLES_DIR.glob("*/configs/*.json"))
        for m in re.findall(r"@[A-Za-z_]\w*(?:#\w+)*#\d+\b", path.read_text())
    ]
    assert found == []


def test_a_hand_edit_of_a_bundle_file_is_found_and_rendering_puts_it_back(tmp_path):
    bundles = tmp_path / "bundles"
    shutil.copytree(BUNDLES_DIR, bundles)
    shutil.copytree(SOURCE, tmp_path / "bundle_source")  # the source beside the bundles, as in the checkout
    edited = bundles / "resunet" / "configs" / "evaluate.json"
    edited.write_text(edited.read_text().replace('"val_interval"', '"val_interval_typo"', 1) + " ")
    assert render_all(bundles, check=True) == [edited]
    proc = subprocess.run(
        [sys.executable, "-m", "monai_ext.bundle.render", "--check", "--folder", str(bundles)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        proc.returncode == 1
        and f"differs: {edited}" in proc.stdout
        and "run python -m monai_ext.bundle.render" in proc.stderr
    )
    assert render_all(bundles) == [edited]
    assert edited.read_text() == (BUNDLES_DIR / "resunet" / "configs" / "evaluate.json").read_text()
    assert render_all(bundles, check=True) == []


def test_the_shared_pipeline_is_written_once():
    template = sum(len(p.read_text().splitlines()) for p in (SOURCE / "template" / "configs").glob("*.json"))
    deltas = sum(len(p.read_text().splitlines()) for p in SOURCE.glob("*.json"))
    rendered = sum(len(p.read_text().splitlines()) for p in BUNDLES_DIR.glob("*/configs/*.json"))
    assert template + deltas < 0.4 * rendered  # 5,700 lines in the bundles come from under 2,300
    # the network is defined once per bundle, for training and inference alike
    for name in bundle_names():
        files = render(name)
        train, infer = (json.loads(files[f"configs/{f}"]) for f in ("train.json", "inference.json"))
        assert train["network_def"] == infer["network_def"]


def _source_with(tmp_path, name, delta):
    bundles = tmp_path / "bundles"
    shutil.copytree(SOURCE, tmp_path / "bundle_source")
    (tmp_path / "bundle_source" / f"{name}.json").write_text(json.dumps(delta, indent=4))
    return bundles


METADATA = {
    "set": {
        "changelog#0.1.0": "first release",
        "name": "SegResNet (2D/3D)",
        "task": "segmentation with SegResNet",
        "description": "MONAI's SegResNet with the shared pipeline",
        "references": [
            "Myronenko, A. 3D MRI brain tumor segmentation using autoencoder regularization. BrainLes 2018."
        ],
    }
}
SEGRESNET = {
    "configs": {
        "set": {
            "network_def": {
                "_target_": "SegResNet",
                "spatial_dims": "@spatial_dims",
                "in_channels": "@in_channels",
                "out_channels": "@out_channels",
                "init_filters": 8,
            }
        }
    },
    "train.json": {"set": {"patch_multiple": 8}},
    "metadata.json": METADATA,
}


@pytest.mark.parametrize(
    "delta, message",
    [
        ({"configs": {"set": {"network_def#nope#x": 1}}}, "'network_def#nope#x' has no 'network_def#nope'"),
        ({"train.json": {"remove": ["no_such_key"]}}, "remove 'no_such_key': no such key"),
        ({"train.json": {"insert": {"train#handlers#99": [{}]}}}, "insert 'train#handlers#99'"),
        ({"train.json": {"replace": {}}}, "unknown edit ['replace']"),
        ({"logging.conf": {"set": {}}}, "logging.conf is copied as it is"),
        ({"trian.json": {}}, "['trian.json'] are not template files"),
    ],
)
def test_a_delta_that_does_not_fit_the_template_is_refused_naming_the_delta_and_the_place(tmp_path, delta, message):
    bundles = _source_with(tmp_path, "broken", {**SEGRESNET, **delta})
    with pytest.raises(RenderError, match="broken.json") as raised:
        render("broken", tmp_path / "bundle_source")
    assert message in str(raised.value)
    proc = subprocess.run(
        [sys.executable, "-m", "monai_ext.bundle.render", "--folder", str(bundles), "broken"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1, (
        proc.stderr
    )
    assert not (bundles / "broken").exists()


def test_a_delta_must_set_what_the_template_leaves_to_each_bundle(tmp_path):
    _source_with(tmp_path, "nonet", {"train.json": {"set": {"patch_multiple": 8}}, "metadata.json": METADATA})
    with pytest.raises(RenderError, match="set \\['network_def'\\]"):
        render("nonet", tmp_path / "bundle_source")
    assert REQUIRED in (SOURCE / "template" / "configs" / "train.json").read_text()


@pytest.mark.slow
def test_an_eighth_architecture_is_one_delta_file_and_trains_through_its_own_configs(tmp_path):
    bundles = _source_with(tmp_path, "segresnet", SEGRESNET)
    written = render_all(bundles, names=["segresnet"])
    bundle = bundles / "segresnet"
    assert {p.relative_to(bundle).as_posix() for p in written} == {
        "LICENSE",
        *(
            f"configs/{f}"
            for f in (
                "train.json",
                "inference.json",
                "evaluate.json",
                "multi_gpu_train.json",
                "metadata.json",
                "logging.conf",
            )
        ),
    }
    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(SCHEMA))
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
        device="cpu",
    )
    data = make_synthetic_dataset(tmp_path / "data", num_cases=8, spatial_dims=2, size=(40, 36), seed=1).parent
    proc = forkserver.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            "configs/train.json",
            "--bundle_root",
            str(bundle),
            "--dataset_dir",
            str(data),
            "--train#trainer#max_epochs",
            "1",
            "--num_workers",
            "0",
            "--patch_size",
            "[32,32]",
        ],
        cwd=bundle,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (bundle / "models" / "model.pt").is_file()
