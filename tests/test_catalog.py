"""``python -m monai_ext list``: every bundle with its task, parameter count, dimensions and whether it is trained."""

import shutil

import torch
from conftest import BUNDLES_DIR
from monai.bundle import ConfigParser

from monai_ext.bundle import with_record
from monai_ext.bundle.catalog import format_bundles, list_bundles


def test_every_bundle_is_listed_untrained_then_trained(tmp_path):
    entries = list_bundles(BUNDLES_DIR)
    assert [e["name"] for e in entries] == [
        "higmisnet",
        "madgnet",
        "medsegdiff",
        "resunet",
        "resunetplusplus",
        "unet",
        "unetplusplus",
    ]
    assert all(
        e["task"] and e["parameters"] > 100_000 and e["trained"] is None and e["dimensions"] == ["2D", "3D"]
        for e in entries
    )
    table = format_bundles(entries)
    assert len(table.splitlines()) == 8 and "no (models/model.pt absent)" in table

    shutil.copytree(BUNDLES_DIR / "unet", tmp_path / "unet")
    parser = ConfigParser()
    parser.read_config(str(tmp_path / "unet" / "configs" / "inference.json"))
    parser.update({"spatial_dims": 3, "bundle_root": "/nonexistent"})
    net = parser.get_parsed_content("network_def")
    (tmp_path / "unet" / "models").mkdir()
    torch.save(
        with_record(
            net.state_dict(), {"spatial_dims": 3}, metric={"name": "val_mean_dice", "value": 0.91, "epoch": 40}
        ),
        tmp_path / "unet" / "models" / "model.pt",
    )
    (unet,) = list_bundles(tmp_path)
    assert unet["trained"] == {
        "checkpoint": str(tmp_path / "unet" / "models" / "model.pt"),
        "spatial_dims": 3,
        "metric": "val_mean_dice",
        "value": 0.91,
        "epoch": 40,
    }
    assert "yes (3D, val_mean_dice 0.910)" in format_bundles([unet])
