"""Networks on the CPU: each backend of ``monai_ext.inferers.CompiledNetwork`` against PyTorch eager fp32,
measured in the same run on the same weights and windows.

Models (the bundles' own ``network_def``, random weights): the U-Net in 3D (windows of ``--window3d``),
ResUNet++ and MADGNet in 2D (slices of ``--window2d``, as a 2D bundle runs slice by slice on a volume).
Backends: ``torch`` fp32 (the reference), ``torch`` channels-last, ``openvino`` fp32, ``openvino`` int8
(NNCF, calibrated on phantom windows), ``onnxruntime`` fp32. For each: seconds per call of ``--batch``
windows (the mean of ``--repeats`` after a warm-up; compiling is timed separately), the speed-up over eager
fp32, the largest logit difference, and for int8 the share of voxels whose arg-max label agrees with
fp32's. Targets (issue 15): a backend at least 2x eager fp32.

**End to end** (``--e2e-size``, default 512x512x200 at 0.7x0.7x2.5 mm, a CT-like NIfTI and the same volume as a
DICOM series): ``segment`` with the U-Net bundle (3D, 96^3 windows, 1.5 mm) on each backend, against the model
zoo's chain with the same weights (``LoadImaged -> Orientationd -> Spacingd -> ScaleIntensityRanged ->
SlidingWindowInferer -> Invertd -> SaveImaged``, from ``bench_sliding_window``), each stage timed; int8 is
calibrated on the volume through the bundle's datalist. Target: ``segment`` at least 3x the zoo's chain.

**int8 accuracy** (``--dice-bundles``, default the six non-diffusion bundles): each is trained through its
own ``train.json`` on the synthetic 2D task (128x128, ``--train-minutes`` each), then ``segment`` runs its
test cases with torch fp32 and with OpenVINO int8 (calibrated on the validation cases); reported: the mean
Dice of the foreground classes for each, and the change. Target: at most 0.005.

Writes ``benchmarks/results/bench_cpu_inference_cpu.json``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
from monai.bundle import ConfigParser
from tqdm import tqdm

from benchmarks.common import row, time_step, write_report
from monai_ext.errors import InputError
from monai_ext.inferers import CompiledNetwork
from monai_ext.threads import available_threads

logger = logging.getLogger("bench_cpu_inference")
ROOT = Path(__file__).resolve().parents[1]
SMOKE = [
    "--window3d",
    "32",
    "--window2d",
    "64",
    "--batch",
    "2",
    "--repeats",
    "1",
    "--models",
    "unet",
    "--e2e-size",
    "0",
    "0",
    "0",
    "--dice-bundles",
]
DICE_BUNDLES = ["unet", "unetplusplus", "resunet", "resunetplusplus", "madgnet", "higmisnet"]
E2E_BACKENDS = [("torch", "fp32"), ("openvino", "fp32"), ("openvino", "int8")]
BACKENDS = [
    ("torch", "fp32", False),
    ("torch", "fp32", True),
    ("openvino", "fp32", False),
    ("openvino", "int8", False),
    ("onnxruntime", "fp32", False),
]


def _network(bundle: str, dims: int, window: List[int]) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(str(ROOT / "bundles" / bundle / "configs" / "inference.json"))
    parser.update({"spatial_dims": dims, "patch_size": window, "bundle_root": "/nonexistent"})
    torch.manual_seed(0)
    return parser.get_parsed_content("network_def").eval()


def _phantom_windows(count: int, window: List[int], seed: int) -> torch.Tensor:
    """Windows of a smooth phantom with noise, z-scored: what a bundle's preprocessing hands its network."""
    g = torch.Generator().manual_seed(seed)
    grids = torch.meshgrid(*[torch.linspace(-1, 1, n) for n in window], indexing="ij")
    out = []
    for _ in range(count):
        centre = torch.rand(len(window), generator=g) - 0.5
        r2 = sum((x - c) ** 2 for x, c in zip(grids, centre))
        image = (r2 < 0.3).float() + 0.5 * (r2 < 0.1).float() + 0.2 * torch.randn(window, generator=g)
        out.append(((image - image.mean()) / image.std())[None])
    return torch.stack(out)


def measure(
    name: str, net: torch.nn.Module, windows: torch.Tensor, calibration: torch.Tensor, repeats: int, cache: Path
) -> Dict[str, dict]:
    with torch.no_grad():
        reference = net(windows)
        results: Dict[str, dict] = {}
        for backend, precision, channels_last in tqdm(BACKENDS, desc=name, leave=False):
            label = f"{backend}-{precision}" + ("-channels_last" if channels_last else "")
            compiled = CompiledNetwork(
                net,
                backend,
                precision,
                channels_last,
                cache / name,
                calibration=lambda: list(calibration.split(1)),
                min_agreement=0.0,
            )  # random weights: speed here; int8's accuracy is int8_dice's
            start = time.perf_counter()
            try:
                out = compiled(windows)
            except Exception as e:  # a backend that cannot run this network is reported, not fatal
                results[label] = {"error": str(e).splitlines()[0][:200]}
                logger.info("%s %s: %s", name, label, results[label]["error"])
                continue
            compile_seconds = time.perf_counter() - start
            seconds, _ = time_step(lambda: compiled(windows), repeats, "cpu")  # after a warm-up call
            results[label] = {
                "seconds": seconds,
                "compile_seconds": compile_seconds,
                "max_abs_diff": float((out - reference).abs().max()),
                "argmax_agreement": float((out.argmax(1) == reference.argmax(1)).float().mean()),
            }
            net.to(
                memory_format=torch.contiguous_format
            )  # channels-last changed the eager network's layout (and a later wrapper starts afresh)
        eager = results["torch-fp32"]["seconds"]
        for r in results.values():
            if "seconds" in r:
                r["speedup"] = eager / r["seconds"]
    return results


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window3d", type=int, default=96, help="U-Net 3D window edge")
    parser.add_argument(
        "--window2d", type=int, default=256, help="2D window edge (MADGNet: rounded to a multiple of 32)"
    )
    parser.add_argument("--batch", type=int, default=4, help="windows per call (a sliding window's sw_batch_size)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--models",
        nargs="+",
        default=["unet", "resunetplusplus", "madgnet"],
        choices=["unet", "resunetplusplus", "madgnet"],
    )
    parser.add_argument(
        "--e2e-size", type=int, nargs=3, default=[512, 512, 200], help="end-to-end volume (0 0 0: none)"
    )
    parser.add_argument(
        "--dice-bundles", nargs="*", default=DICE_BUNDLES, choices=DICE_BUNDLES, help="int8 Dice (none: skip)"
    )
    parser.add_argument("--train-minutes", type=float, default=2.0, help="training time per bundle for the int8 Dice")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(available_threads())
    w2 = args.window2d // 32 * 32
    models = [
        m
        for m in [("unet", 3, [args.window3d] * 3), ("resunetplusplus", 2, [w2, w2]), ("madgnet", 2, [w2, w2])]
        if m[0] in args.models
    ]
    report_models = []
    with tempfile.TemporaryDirectory(prefix="bench_cpu_inference_") as cache:
        for bundle, dims, window in tqdm(models, desc="networks"):
            net = _network(bundle, dims, window)
            windows = _phantom_windows(args.batch, window, seed=1)
            calibration = _phantom_windows(8, window, seed=2)
            logger.info("%s %dD, %d windows of %s", bundle, dims, args.batch, window)
            results = measure(bundle, net, windows, calibration, args.repeats, Path(cache))
            for label, r in results.items():
                if "seconds" in r:
                    logger.info(
                        "%s %s: %.3f s (x%.2f eager fp32), compile %.1f s, max diff %.1e, arg-max agreement %.4f",
                        bundle,
                        label,
                        r["seconds"],
                        r["speedup"],
                        r["compile_seconds"],
                        r["max_abs_diff"],
                        r["argmax_agreement"],
                    )
            report_models.append(
                {"bundle": bundle, "spatial_dims": dims, "window": window, "batch": args.batch, "results": results}
            )
    report = {
        "threads": torch.get_num_threads(),
        "models": report_models,
        "targets": {"speedup_vs_eager_fp32": 2.0, "end_to_end_vs_zoo": 3.0, "int8_dice_change_at_most": 0.005},
    }
    if all(args.e2e_size):
        report["end_to_end"] = end_to_end(args.e2e_size)
    if args.dice_bundles:
        report["int8_dice"] = int8_dice(args.dice_bundles, args.train_minutes)
    write_report(report, "bench_cpu_inference", torch.device("cpu"), args.output)
    return report


def end_to_end(size: List[int]) -> List[dict]:
    """``segment`` on each backend and the zoo's chain, on a NIfTI and on a DICOM series of one CT volume."""
    import json
    import shutil

    import nibabel as nib
    import numpy as np

    from benchmarks.bench_sliding_window import _make_ct, _zoo_way
    from monai_ext.apps.segment import segment
    from monai_ext.data.dicom.export import write_dicom_series

    results = []
    with tempfile.TemporaryDirectory(prefix="bench_cpu_e2e_") as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        data.mkdir()
        nifti = _make_ct(data / "ct.nii.gz", size)
        image = nib.load(str(nifti))
        write_dicom_series(np.asarray(image.dataobj).astype(np.int16), image.affine, tmp / "ct_dicom")
        (data / "datalist.json").write_text(json.dumps({"validation": [{"image": "ct.nii.gz"}]}))  # int8 calibration
        bundle = tmp / "unet"
        shutil.copytree(ROOT / "bundles" / "unet", bundle, ignore=shutil.ignore_patterns("models", "eval"))
        overrides = {
            "spatial_dims": 3,
            "patch_size": [96, 96, 96],
            "pixdim": [1.5, 1.5, 1.5],
            "dataset_dir": str(data),
            "intensity": {"scheme": "window", "a_min": -57, "a_max": 164},
        }
        parser = ConfigParser()
        parser.read_config(str(bundle / "configs" / "inference.json"))
        parser.update(overrides)
        torch.manual_seed(0)
        net = parser.get_parsed_content("network_def").eval()
        (bundle / "models").mkdir()
        torch.save(net.state_dict(), bundle / "models" / "model.pt")
        for name, source in (("NIfTI", nifti), ("DICOM", tmp / "ct_dicom")):
            logger.info("end to end on the %s input: the zoo's chain", name)
            _zoo_way(net, source, tmp / "zoo", torch.device("cpu"), 4)  # warm-up
            zoo = _zoo_way(net, source, tmp / "zoo", torch.device("cpu"), 4)
            reference = None
            for backend, precision in E2E_BACKENDS:
                logger.info("end to end on the %s input: segment, %s %s", name, backend, precision)
                out = tmp / f"{backend}-{precision}"
                segment(
                    bundle,
                    source,
                    out,
                    device="cpu",
                    overrides=overrides,
                    overwrite=True,
                    progress=False,
                    backend=backend,
                    precision=precision,
                )
                (result,) = segment(
                    bundle,
                    source,
                    out,
                    device="cpu",
                    overrides=overrides,
                    overwrite=True,
                    progress=False,
                    backend=backend,
                    precision=precision,
                )  # the second run: compiled models come from the cache
                mask = np.asarray(nib.load(str(result.output)).dataobj)
                reference = mask if reference is None else reference
                row = {
                    "input": name,
                    "backend": backend,
                    "precision": precision,
                    "ours_seconds": result.seconds,
                    "zoo_seconds": zoo,
                    "ours_total": sum(result.seconds.values()),
                    "zoo_total": sum(zoo.values()),
                    "agreement_with_torch_fp32": float((mask == reference).mean()),
                }
                row["ratio"] = row["zoo_total"] / row["ours_total"]
                logger.info(
                    "%s %s %s: segment %.1f s (%s) against the zoo's %.1f s (%s): x%.2f; labels agree with torch fp32 on %.4f",
                    name,
                    backend,
                    precision,
                    row["ours_total"],
                    ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()),
                    row["zoo_total"],
                    ", ".join(f"{k} {v:.1f}" for k, v in zoo.items()),
                    row["ratio"],
                    row["agreement_with_torch_fp32"],
                )
                results.append(row)
    return results


def _dice(mask, label, classes) -> float:
    import numpy as np

    scores = []
    for c in classes:
        a, b = mask == c, label == c
        if a.sum() + b.sum():
            scores.append(2 * float(np.logical_and(a, b).sum()) / float(a.sum() + b.sum()))
    return float(np.mean(scores)) if scores else 1.0


def int8_dice(bundles: List[str], minutes: float) -> List[dict]:
    """Train each bundle briefly on the synthetic 2D task; Dice of torch fp32 and OpenVINO int8 on its test cases."""
    import json
    import shutil
    import subprocess
    import sys

    import nibabel as nib
    import numpy as np

    from monai_ext.apps.segment import segment
    from monai_ext.data import make_synthetic_dataset

    results = []
    with tempfile.TemporaryDirectory(prefix="bench_cpu_dice_") as tmp:
        tmp = Path(tmp)
        datalist = make_synthetic_dataset(tmp / "syn2d", num_cases=40, spatial_dims=2, size=(128, 128), seed=0)
        data = datalist.parent
        tests = tmp / "test"
        tests.mkdir()
        cases = json.loads(datalist.read_text())["test"]
        for case in cases:
            shutil.copy(data / case["image"], tests / Path(case["image"]).name)
        for name in tqdm(bundles, desc="int8 Dice"):
            bundle = tmp / name
            shutil.copytree(ROOT / "bundles" / name, bundle, ignore=shutil.ignore_patterns("models", "eval"))
            logger.info("%s: training for %.1f min on the synthetic 2D task", name, minutes)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "monai.bundle",
                    "run",
                    "--config_file",
                    str(bundle / "configs" / "train.json"),
                    "--meta_file",
                    str(bundle / "configs" / "metadata.json"),
                    "--bundle_root",
                    str(bundle),
                    "--dataset_dir",
                    str(data),
                    "--patch_size",
                    "[128,128]",
                    "--num_workers",
                    "0",
                    "--time_budget",
                    str(minutes),
                ],
                cwd=bundle,
                check=True,
                capture_output=True,
                text=True,
            )
            row = {"bundle": name}
            for backend, precision in (("torch", "fp32"), ("openvino", "int8")):
                out = tmp / f"{name}-{backend}-{precision}"
                try:
                    done = segment(
                        bundle,
                        tests,
                        out,
                        device="cpu",
                        overrides={"dataset_dir": str(data)},
                        progress=False,
                        backend=backend,
                        precision=precision,
                    )
                except InputError as e:
                    done = [type("Failed", (), {"error": str(e)})()]
                failed = [r.error for r in done if r.error]
                if failed:  # int8 refused: the network does not quantise
                    row[f"{backend}-{precision}"], row["refused"] = None, failed[0]
                    continue
                scores = []
                for r, case in zip(
                    sorted(done, key=lambda r: r.input.name), sorted(cases, key=lambda c: Path(c["image"]).name)
                ):
                    mask = np.asarray(nib.load(str(r.output)).dataobj)
                    label = np.asarray(nib.load(str(data / case["label"])).dataobj)
                    scores.append(_dice(mask, label, (1, 2)))
                row[f"{backend}-{precision}"] = float(np.mean(scores))
            if row["openvino-int8"] is None:
                logger.info("%s: Dice torch fp32 %.4f; int8 refused: %s", name, row["torch-fp32"], row["refused"])
            else:
                row["change"] = row["openvino-int8"] - row["torch-fp32"]
                logger.info(
                    "%s: Dice torch fp32 %.4f, OpenVINO int8 %.4f (change %+.4f)",
                    name,
                    row["torch-fp32"],
                    row["openvino-int8"],
                    row["change"],
                )
            results.append(row)
    return results


def summarize(report: dict) -> List[dict]:
    rows = []
    for r in report.get("int8_dice", []):
        if r.get("openvino-int8") is None:
            continue  # refused: the network does not quantise
        rows.append(
            row(
                f"{r['bundle']} 2D synthetic test set: Dice with OpenVINO int8 (change {r['change']:+.4f}; target within 0.005)",
                r["openvino-int8"],
                "PyTorch eager fp32 Dice",
                r["torch-fp32"],
                r["openvino-int8"] / r["torch-fp32"] if r["torch-fp32"] else None,
            )
        )
    for r in report.get("end_to_end", []):
        what = (
            f"segment end to end, {r['input']} CT, U-Net 3D on {r['backend']} {r['precision']} "
            f"(labels agree with torch fp32 on {r['agreement_with_torch_fp32']:.4f})"
        )
        rows.append(
            row(
                what,
                r["ours_total"],
                "MONAI zoo chain (LoadImage, Spacing, SlidingWindowInferer, Invertd, SaveImage)",
                r["zoo_total"],
                r["ratio"],
                "s",
            )
        )
    for m in report["models"]:
        eager = m["results"]["torch-fp32"]["seconds"]
        for label, r in m["results"].items():
            if label == "torch-fp32" or "seconds" not in r:
                continue
            window = "x".join(map(str, m["window"]))
            what = (
                f"{m['bundle']} {m['spatial_dims']}D, {m['batch']} x {window}: {label} "
                f"(arg-max agreement {r['argmax_agreement']:.4f})"
            )
            rows.append(row(what, r["seconds"], "PyTorch eager fp32", eager, r["speedup"], "s"))
    return rows


if __name__ == "__main__":
    main()
