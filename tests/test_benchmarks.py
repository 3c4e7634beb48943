"""The benchmarks run end to end (at toy sizes) and write the JSON the results page is built from."""

import json
import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_layers  # noqa: E402
import train_synthetic  # noqa: E402


def test_bench_layers_reports_ratios_against_the_references(tmp_path):
    out = tmp_path / "layers.json"
    bench_layers.main(["--device", "cpu", "--batch", "1", "--channels", "2", "--size-2d", "16", "--size-3d", "8", "--repeats", "1", "--output", str(out)])
    report = json.loads(out.read_text())
    assert report["benchmark"] == "bench_layers" and len(report["results"]) == 4
    for row in report["results"]:
        assert row["monai_ext_ms"]["forward+inverse+backward"] > 0
        assert "pywt" in row["references"]  # always installed: the reference of last resort
        for ref in row["references"].values():
            assert ref["ratio"] > 0


def test_train_synthetic_trains_a_bundle_for_its_budget(tmp_path):
    out = tmp_path / "train.json"
    train_synthetic.main(["--bundles", "unet", "--minutes", "0.05", "--cases", "6", "--val-interval", "1", "--output", str(out)])
    (row,) = json.loads(out.read_text())["results"]
    assert row["bundle"] == "unet" and 0.0 <= row["val_dice_final"] <= 1.0 and row["patches_per_second"] > 0


def test_bench_sliding_window_compares_with_monai_and_the_zoo_way(tmp_path):
    import bench_sliding_window

    out = tmp_path / "sw.json"
    bench_sliding_window.main(["--size", "40", "40", "40", "--e2e-size", "48", "48", "24", "--repeats", "1", "--output", str(out)])
    report = json.loads(out.read_text())
    assert {r["network"] for r in report["windows"]} == {"unet", "segresnet"}
    assert all(r["ratio"] > 0 and r["ours"]["seconds"] > 0 for r in report["windows"])
    e2e = report["end_to_end"]
    assert set(e2e["ours_seconds"]) == {"read", "preprocess", "predict", "invert", "write"} and e2e["ratio"] > 0


def test_bench_madgnet_compares_with_the_unet_bundle(tmp_path):
    import bench_madgnet

    out = tmp_path / "madgnet.json"
    bench_madgnet.main(["--size", "64", "--batch", "2", "--repeats", "1", "--minutes", "0.02", "--cases", "6", "--same-process", "--output", str(out)])
    report = json.loads(out.read_text())
    assert set(report["throughput"]) == {"unet/train", "unet/infer", "madgnet/train", "madgnet/infer"}
    assert report["throughput"]["madgnet/infer"]["parameters"] > report["throughput"]["unet/infer"]["parameters"]
    assert set(report["dice_after_budget"]) == {"unet", "madgnet"} and all(v > 0 for v in report["throughput_ratio"].values())


def test_bench_medsegdiff_compares_samplers_after_a_training_budget(tmp_path):
    import bench_medsegdiff

    out = tmp_path / "medsegdiff.json"
    bench_medsegdiff.main(["--minutes", "0.02", "--cases", "6", "--images", "1", "--ensemble", "2", "--settings", "ddim-10", "ddim-25",
                           "--output", str(out)])
    report = json.loads(out.read_text())
    assert set(report["samplers"]) == {"ddim-10", "ddim-25"}
    for r in report["samplers"].values():
        assert 0 <= r["dice_0.5"] <= 1 and 0 <= r["dice_official_thresholds"] <= 1 and r["seconds_per_image"] > 0
    assert bench_medsegdiff.score(torch.ones(1, 4, 4), torch.ones(1, 4, 4).long()) == {"dice_0.5": 1.0, "dice_official_thresholds": 1.0}


def test_bench_higmisnet_compares_with_the_unet_bundle_with_and_without_adversarial_terms(tmp_path):
    import bench_higmisnet

    out = tmp_path / "higmisnet.json"
    bench_higmisnet.main(["--size", "32", "--batch", "2", "--repeats", "1", "--minutes", "0.02", "--cases", "6", "--same-process",
                          "--output", str(out)])
    report = json.loads(out.read_text())
    assert set(report["speed"]) == {"unet", "higmisnet"} and report["iterations_ratio"] > 0
    assert len(report["dice_after_budget"]) == 3
    ablation = report["dice_after_budget"]["higmisnet without adversarial and reciprocal terms"]
    assert ablation["overrides"] == {"adversarial_weight": 0.0, "reciprocal_weight": 0.0}
