"""The benchmarks run end to end (at toy sizes) and write the JSON the results page is built from."""

import json
import sys
from pathlib import Path

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
