"""Every data-set overlay works with its data: a training batch through the network and loss, and
inference writing masks with the source's size (and affine for volumes), through the bundles' configs."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import LoadImage
from PIL import Image
from test_public_datasets import REPLICAS

from monai_ext.data.public import prepare_dataset

ROOT = Path(__file__).resolve().parents[1]
CLASSIC = ["unet", "unetplusplus", "resunet", "resunetplusplus"]


def _parser(bundle: str, config: str, overlay: str, **overrides) -> ConfigParser:
    configs = ROOT / "bundles" / bundle / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / config), str(configs / "datasets" / f"{overlay}.json")])
    parser.read_meta(str(configs / "metadata.json"))
    parser.update(overrides)
    return parser


def test_overlays_are_the_same_in_every_classic_bundle():
    names = sorted(p.name for p in (ROOT / "bundles" / "unet" / "configs" / "datasets").glob("*.json"))
    assert names == sorted(f"{n}.json" for n in REPLICAS)
    for bundle in CLASSIC[1:]:
        for name in names:
            a = (ROOT / "bundles" / "unet" / "configs" / "datasets" / name).read_text()
            assert (ROOT / "bundles" / bundle / "configs" / "datasets" / name).read_text() == a, (bundle, name)


@pytest.mark.parametrize("name", sorted(REPLICAS))
def test_overlay_trains_and_infers_on_the_data_sets_own_files(name, tmp_path):
    REPLICAS[name](tmp_path / "source")
    data = prepare_dataset(name, tmp_path / "source", tmp_path / "prepared").parent
    overlay = json.loads((ROOT / "bundles" / "unet" / "configs" / "datasets" / f"{name}.json").read_text())
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


def test_madgnet_overlays_differ_from_the_classic_ones_only_where_its_stride_needs():
    classic = ROOT / "bundles" / "unet" / "configs" / "datasets"
    for path in sorted((ROOT / "bundles" / "madgnet" / "configs" / "datasets").glob("*.json")):
        ours, theirs = json.loads(path.read_text()), json.loads((classic / path.name).read_text())
        assert all(p % 32 == 0 for p in ours["patch_size"]), path.name  # five down-samplings
        differing = {k for k in ours if ours[k] != theirs.get(k)}
        assert differing <= {"patch_size", "_desc_"}, (path.name, differing)


def test_higmisnet_overlays_follow_the_papers_protocols():
    folder = ROOT / "bundles" / "higmisnet" / "configs" / "datasets"
    expected = {"isic2018": [128, 128], "busi": [256, 256], "cvc_clinicdb": [384, 288], "monuseg": [512, 512], "glas": [512, 512],
                "drive": [512, 512], "montgomery": [256, 256], "promise12": [256, 256], "physionet_ich": [256, 256]}
    for name, size in expected.items():
        overlay = json.loads((folder / f"{name}.json").read_text())
        assert overlay["patch_size"] == size and overlay["spatial_dims"] == 2, name
        assert all(p % 16 == 0 for p in overlay["patch_size"])  # four down-samplings
    assert "slices=true" in json.loads((folder / "physionet_ich.json").read_text())["_desc_"]
    assert "include_normal=false" in json.loads((folder / "busi.json").read_text())["_desc_"]
