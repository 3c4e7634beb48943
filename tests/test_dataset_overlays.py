"""Data-set overlays are stored once (``datasets/``) and merged with config lists; each works with
its data: a training batch through the network and loss, and inference writing masks with the source's
size (and affine for volumes), through the bundles' configs."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import BUNDLES, BUNDLES_DIR
from monai.bundle import ConfigParser
from monai.transforms import LoadImage
from PIL import Image
from test_public_datasets import REPLICAS

from monai_ext.data.public import prepare_dataset

ROOT = Path(__file__).resolve().parents[1]
OVERLAYS = ROOT / "datasets"


def _parser(bundle: str, config: str, overlay: str, **overrides) -> ConfigParser:
    configs = BUNDLES_DIR / bundle / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / config), str(OVERLAYS / f"{overlay}.json")])
    parser.read_meta(str(configs / "metadata.json"))
    parser.update(overrides)
    return parser


def test_one_overlay_per_data_set_and_no_copies_in_the_bundles():
    assert sorted(p.stem for p in OVERLAYS.glob("*.json")) == sorted(REPLICAS)
    assert not [b for b in BUNDLES if (BUNDLES_DIR / b / "configs" / "datasets").exists()]


@pytest.mark.parametrize("name", sorted(REPLICAS))
def test_overlays_hold_settings_as_data_that_every_bundle_takes(name):
    overlay = json.loads((OVERLAYS / f"{name}.json").read_text())
    assert not any(isinstance(v, dict) and "_target_" in v for v in overlay.values())  # data, so training can record it
    assert all(p % 32 == 0 for p in overlay["patch_size"])  # MADGNet down-samples five times
    assert overlay["data_source"]["name"] and overlay["data_source"]["url"].startswith("https://")
    from monai_ext.transforms import IntensityNormalizationd

    IntensityNormalizationd("image", **overlay["intensity"])
    for bundle in BUNDLES:
        parser = _parser(bundle, "inference.json", name)
        assert parser.get_parsed_content("spatial_dims") == overlay["spatial_dims"]
        assert parser.get_parsed_content("class_names") == overlay["class_names"]


@pytest.mark.parametrize("name", sorted(REPLICAS))
def test_overlay_trains_and_infers_on_the_data_sets_own_files(name, tmp_path):
    REPLICAS[name](tmp_path / "source")
    data = prepare_dataset(name, tmp_path / "source", tmp_path / "prepared").parent
    overlay = json.loads((OVERLAYS / f"{name}.json").read_text())
    common = {"dataset_dir": str(data), "num_workers": 0, "bundle_root": str(tmp_path / "run")}

    train = _parser("unet", "train.json", name, **common, batch_size=2)
    batch = next(iter(train.get_parsed_content("train#dataloader")))
    assert batch["image"].shape[1] == overlay["in_channels"]
    assert list(batch["image"].shape[2:]) == overlay["patch_size"]
    net = train.get_parsed_content("network")
    logits = net(batch["image"])
    assert logits.shape[1] == overlay["out_channels"]
    assert torch.isfinite(train.get_parsed_content("loss")(logits, batch["label"]))

    infer = _parser("unet", "inference.json", name, **common, datalist_key="test", handlers=[])
    infer.get_parsed_content("evaluator").run()
    datalist = json.loads((data / "datalist.json").read_text())
    for case in datalist["test"]:
        source = Path(case["image"])
        stem = source.name.split(".")[0]
        written = sorted((tmp_path / "run" / "eval").glob(f"{stem}_seg*"))
        assert len(written) == 1, (stem, list((tmp_path / "run" / "eval").iterdir()))
        out = written[0]
        assert out.name.endswith(overlay["output_ext"])
        reference = LoadImage(image_only=True)(str(source))
        if overlay["spatial_dims"] == 2:
            with Image.open(out) as mask, Image.open(source) as image:
                assert mask.size == image.size
        else:
            mask = nib.load(str(out))
            assert mask.shape == tuple(reference.shape[:3])
            np.testing.assert_allclose(mask.affine, reference.affine.numpy(), atol=1e-4)


def test_higmisnet_protocols_merge_after_the_shared_overlays():
    folder = BUNDLES_DIR / "higmisnet" / "configs" / "protocols"
    expected = {
        "isic2018": [128, 128],
        "busi": [256, 256],
        "cvc_clinicdb": [384, 288],
        "monuseg": [512, 512],
        "glas": [512, 512],
        "drive": [512, 512],
        "montgomery": [256, 256],
        "promise12": [256, 256],
        "physionet_ich": [256, 256],
    }
    configs = BUNDLES_DIR / "higmisnet" / "configs"
    for name, size in expected.items():
        parser = ConfigParser()
        parser.read_config([str(configs / "train.json"), str(OVERLAYS / f"{name}.json"), str(folder / f"{name}.json")])
        assert parser.get_parsed_content("patch_size") == size and parser.get_parsed_content("spatial_dims") == 2, name
        assert all(p % 16 == 0 for p in size)  # four down-samplings
        protocol = json.loads((folder / f"{name}.json").read_text())
        assert set(protocol) <= {
            "_desc_",
            "patch_size",
            "resize",
            "pixdim",
            "spatial_dims",
        }  # only what the paper changes
    assert "slices=true" in json.loads((folder / "physionet_ich.json").read_text())["_desc_"]
    assert "include_normal=false" in json.loads((folder / "busi.json").read_text())["_desc_"]
