"""The benchmarks run end to end (at toy sizes, their ``SMOKE`` arguments) and write the JSON that
``python -m benchmarks`` builds its report from."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import bench_layers
from benchmarks.accuracy import train_synthetic

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
ROOT = BENCHMARKS.parent


def _rows(module, report: dict) -> list:
    """The report lines the benchmark contributes: each with a reference, and a positive ratio where both sides ran."""
    rows = module.summarize(report)
    assert rows
    for r in rows:
        assert r["measurement"] and r["reference"] and r["ours"] is not None
        assert r["ratio"] is None or r["ratio"] > 0 or r["ours"] == 0
    return rows


def test_bench_layers_reports_ratios_against_the_references(tmp_path):
    out = tmp_path / "layers.json"
    bench_layers.main(bench_layers.SMOKE + ["--output", str(out)])
    report = json.loads(out.read_text())
    assert report["benchmark"] == "bench_layers" and len(report["results"]) == 4
    for row in report["results"]:
        assert row["monai_ext_ms"]["forward+inverse+backward"] > 0
        assert "pywt" in row["references"]  # always installed: the reference of last resort
        for ref in row["references"].values():
            assert ref["ratio"] > 0
    assert len(_rows(bench_layers, report)) == sum(len(r["references"]) for r in report["results"])


def test_train_synthetic_trains_a_bundle_for_its_budget(tmp_path):
    out = tmp_path / "train.json"
    train_synthetic.main(train_synthetic.SMOKE + ["--output", str(out)])
    report = json.loads(out.read_text())
    (row,) = report["results"]
    assert row["bundle"] == "unet" and 0.0 <= row["val_dice_final"] <= 1.0 and row["patches_per_second"] > 0
    (line,) = _rows(train_synthetic, report)
    assert line["reference_value"] == 0.90


def test_learning_curves_record_dice_against_steps_images_and_seconds_and_plot_them(tmp_path, monkeypatch, capsys):
    from benchmarks.accuracy import learning_curves
    from benchmarks.accuracy.learning_curves import train_bundle

    out = tmp_path / "curves.json"
    variants = [{"variant": "a run recorded by hand", "steps": 3, "best": 0.5}]
    out.write_text(json.dumps({"tasks": [], "variants": variants, "note": "kept"}))
    learning_curves.main(
        learning_curves.SMOKE + ["--steps", "3", "--eval-every", "2", "--output", str(out), "--append"]
    )
    report = json.loads(out.read_text())
    assert report["variants"] == variants and report["note"] == "kept"  # --append keeps what else the report holds
    (task,) = report["tasks"]
    (result,) = task["results"]
    assert [c["steps"] for c in result["curve"]] == [2, 3]  # every 2 steps, and at the end
    assert all(c["images"] > 0 and c["seconds"] >= 0 and 0 <= c["dice"] <= 1 for c in result["curve"])
    assert result["summary"]["target"] == 0.90 and result["summary"]["seconds_per_step"] > 0
    (line,) = _rows(learning_curves, report)
    assert line["reference_value"] == 0.90
    picture = learning_curves.plot(report, tmp_path / "curves.png")
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # bundles run in turns (--append): a bundle's new result replaces its old one on the same task, others stay
    other = dict(result, bundle="resunet", curve=[{"steps": 3, "images": 48, "seconds": 9.0, "dice": 0.5}], steps=3)
    merged = learning_curves.merge(report["tasks"], [dict(task, results=[other])])
    assert [r["bundle"] for r in merged[0]["results"]] == ["unet", "resunet"]
    again = learning_curves.merge(
        merged, [dict(task, results=[dict(other, curve=[dict(other["curve"][0], dice=0.6)])])]
    )
    assert [r["curve"][0]["dice"] for r in again[0]["results"]] == [result["curve"][0]["dice"], 0.6]
    assert learning_curves._reference_best(again[0], 2) == result["curve"][0]["dice"]  # the U-Net within 2 steps
    # a run on another number of cases does not join the task: refused before it trains, naming the file
    with pytest.raises(ValueError, match="cases"):
        learning_curves.merge(merged, [dict(task, cases=task["cases"] + 1, results=[other])])
    before = out.read_bytes()
    with pytest.raises(SystemExit) as stop:
        learning_curves.main(learning_curves.SMOKE + ["--cases", "7", "--output", str(out), "--append"])
    assert stop.value.code == 2 and out.read_bytes() == before
    assert str(out) in capsys.readouterr().err
    # ... and where the task changes under a run while it trains, the run is written beside the file, not lost
    mixed = {"tasks": [dict(task, cases=task["cases"] + 1, results=[])]}

    def another_run_appends(*args, **kwargs):
        out.write_text(json.dumps(mixed))
        return train_bundle(*args, **kwargs)

    monkeypatch.setattr(learning_curves, "train_bundle", another_run_appends)
    learning_curves.main(learning_curves.SMOKE + ["--output", str(out), "--append"])
    assert json.loads(out.read_text()) == mixed
    assert json.loads((tmp_path / "curves_unmerged.json").read_text())["tasks"][0]["results"][0]["bundle"] == "unet"


def test_bench_sliding_window_compares_with_monai_and_the_zoo_way(tmp_path):
    from benchmarks import bench_sliding_window

    out = tmp_path / "sw.json"
    bench_sliding_window.main(bench_sliding_window.SMOKE + ["--output", str(out)])
    report = json.loads(out.read_text())
    assert {r["network"] for r in report["windows"]} == {"unet", "segresnet"}
    assert all(r["ratio"] > 0 and r["ours"]["seconds"] > 0 for r in report["windows"])
    e2e = report["end_to_end"]
    assert set(e2e["ours_seconds"]) == {"read", "preprocess", "predict", "postprocess", "write"} and e2e["ratio"] > 0
    assert len(_rows(bench_sliding_window, report)) == len(report["windows"]) + 1


def test_bench_madgnet_compares_with_the_unet_bundle(tmp_path):
    from benchmarks import bench_madgnet

    out = tmp_path / "madgnet.json"
    bench_madgnet.main(bench_madgnet.SMOKE + ["--output", str(out)])
    report = json.loads(out.read_text())
    assert set(report["throughput"]) == {"unet/train", "unet/infer", "madgnet/train", "madgnet/infer"}
    assert report["throughput"]["madgnet/infer"]["parameters"] > report["throughput"]["unet/infer"]["parameters"]
    assert set(report["dice_after_budget"]) == {"unet", "madgnet"} and all(
        v > 0 for v in report["throughput_ratio"].values()
    )
    assert len(_rows(bench_madgnet, report)) == 5


def test_bench_medsegdiff_compares_samplers_after_a_training_budget(tmp_path):
    from benchmarks import bench_medsegdiff

    out = tmp_path / "medsegdiff.json"
    bench_medsegdiff.main(bench_medsegdiff.SMOKE + ["--output", str(out)])
    report = json.loads(out.read_text())
    assert set(report["samplers"]) == {"ddim-10", "ddim-25"}
    for r in report["samplers"].values():
        assert 0 <= r["dice_0.5"] <= 1 and 0 <= r["dice_official_thresholds"] <= 1 and r["seconds_per_image"] > 0
    assert bench_medsegdiff.score(torch.ones(1, 4, 4), torch.ones(1, 4, 4).long()) == {
        "dice_0.5": 1.0,
        "dice_official_thresholds": 1.0,
    }
    assert len(_rows(bench_medsegdiff, report)) == 3 * 2  # two Dice lines and a time line per DDIM setting


def test_bench_higmisnet_compares_with_the_unet_bundle_with_and_without_adversarial_terms(tmp_path):
    from benchmarks import bench_higmisnet

    out = tmp_path / "higmisnet.json"
    bench_higmisnet.main(bench_higmisnet.SMOKE + ["--output", str(out)])
    report = json.loads(out.read_text())
    assert set(report["speed"]) == {"unet", "higmisnet"} and report["iterations_ratio"] > 0
    assert len(report["dice_after_budget"]) == 3
    ablation = report["dice_after_budget"]["higmisnet without adversarial and reciprocal terms"]
    assert ablation["overrides"] == {"adversarial_weight": 0.0, "reciprocal_weight": 0.0}
    assert len(_rows(bench_higmisnet, report)) == 4


def test_one_command_runs_the_benchmarks_and_writes_the_report(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--smoke",
            "--only",
            "bench_layers",
            "--results",
            str(tmp_path),
            "--output",
            str(tmp_path / "R.md"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "bench_layers_cpu.json").is_file()
    lines = [line for line in (tmp_path / "R.md").read_text().splitlines() if line.startswith("| bench_layers |")]
    assert len(lines) >= 4 and all(" x" in line for line in lines)


def test_the_committed_report_is_built_from_the_committed_results(tmp_path):
    """Every JSON in benchmarks/results/ is summarised (one benchmark, at least one line), and REPORT.md is
    what `python -m benchmarks --table-only` writes from them."""
    output = tmp_path / "REPORT.md"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--table-only", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = output.read_text()
    for path in (BENCHMARKS / "results").glob("*.json"):
        assert f"| {json.loads(path.read_text())['benchmark']} |" in text, path.name
    assert text == (BENCHMARKS / "REPORT.md").read_text(), "regenerate: python -m benchmarks --table-only"


def test_bench_dicom_read_compares_with_itk_and_pydicom(tmp_path):
    from benchmarks import bench_dicom_read

    out = tmp_path / "dicom.json"
    bench_dicom_read.main(bench_dicom_read.SMOKE + ["--output", str(out)])
    report = json.loads(out.read_text())
    assert [r["syntax"] for r in report["results"]] == ["explicit", "jpeg2000"]
    for r in report["results"]:
        assert r["itk"]["voxels_equal"] and r["ours"]["seconds"] > 0
    assert len(_rows(bench_dicom_read, report)) == 6


def test_bench_cpu_inference_compares_each_backend_with_eager(tmp_path):
    from benchmarks import bench_cpu_inference

    out = tmp_path / "cpu.json"
    bench_cpu_inference.main(bench_cpu_inference.SMOKE + ["--output", str(out)])
    report = json.loads(out.read_text())
    assert [m["bundle"] for m in report["models"]] == [
        "unet"
    ]  # the smoke run; the benchmark adds ResUNet++ and MADGNet
    for m in report["models"]:
        fp32 = {k: v for k, v in m["results"].items() if k.endswith("fp32") and "seconds" in v}
        assert {"torch-fp32", "openvino-fp32"} <= set(fp32) and all(v["max_abs_diff"] < 1e-3 for v in fp32.values())
    assert _rows(bench_cpu_inference, report)
