"""Sliding-window inference and end-to-end segmentation against MONAI, measured in the same run.

**Window stitching.** A CT-sized volume (default 1x1x384x384x256), window 96^3, overlap 0.5, Gaussian
blending, with MONAI's UNet (channels 16..256, 2 residual units) and SegResNet (16 filters):
``monai_ext.inferers.StreamingSlidingWindowInferer`` against ``monai.inferers.sliding_window_inference`` with the
same network and settings, for

- ``gpu-resident``: the volume and the result on the GPU;
- ``cpu-resident``: the volume and the result on the CPU, the windows on the GPU (MONAI:
  ``sw_device=cuda, device=cpu``);
- ``cpu``: everything on the CPU (the only case without a GPU);

each in fp32 and bf16 (autocast around the network for both; bf16 on a CPU only where it is native). Reported:
median time, peak GPU memory, ratio MONAI / ours.

**End to end.** ``segment`` on a CT NIfTI (default 512x512x200, 0.7x0.7x2.5 mm) with a bundle (read,
resample to 1.5 mm, infer, invert, write) against the model zoo's way with the same network and weights
(``LoadImaged -> Orientationd -> Spacingd -> ScaleIntensityRanged -> SlidingWindowInferer -> Invertd ->
SaveImaged``), each stage timed.

Writes ``benchmarks/results/bench_sliding_window_<device>.json``. On a CPU the defaults are too slow:
pass a smaller ``--size`` (e.g. ``--size 160 160 96 --e2e-size 256 256 80``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.inferers import sliding_window_inference
from monai.networks.nets import SegResNet, UNet
from tqdm import tqdm

from benchmarks.common import row, write_report
from monai_ext.apps import segment
from monai_ext.inferers import StreamingSlidingWindowInferer, cpu_has_native_bf16

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("bench_sliding_window")
NETWORKS = {
    "unet": lambda: UNet(3, 1, 2, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2),
    "segresnet": lambda: SegResNet(spatial_dims=3, init_filters=16, in_channels=1, out_channels=2),
}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _measure(fns: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, Dict[str, float]]:
    """Median time and peak GPU memory of each function, run round-robin (load changes hit all alike)."""
    for fn in fns.values():
        fn()
    _sync()
    times: Dict[str, List[float]] = {k: [] for k in fns}
    peak = dict.fromkeys(fns, 0.0)
    for _ in range(repeats):
        for name, fn in fns.items():
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            fn()
            _sync()
            times[name].append(time.perf_counter() - start)
            if torch.cuda.is_available():
                peak[name] = max(peak[name], torch.cuda.max_memory_allocated() / 2**20)
    return {k: {"seconds": statistics.median(times[k]), "peak_gpu_mib": round(peak[k], 1)} for k in fns}


def window_cases(size: List[int], repeats: int, sw_batch: int) -> List[dict]:
    cuda = torch.cuda.is_available()
    residencies = ["gpu-resident", "cpu-resident"] if cuda else ["cpu"]
    # bf16 only where it is native: PyTorch emulates it on other CPUs, many times slower (segment refuses it there)
    precisions = ("fp32", "bf16") if cuda or cpu_has_native_bf16() else ("fp32",)
    rows = []
    for name, make, residency, dtype in tqdm(
        [(n, m, r, d) for n, m in NETWORKS.items() for r in residencies for d in precisions], desc="windows"
    ):
        net = make().eval().to("cuda" if cuda else "cpu")
        volume = torch.randn([1, 1] + size, device="cuda" if residency == "gpu-resident" else "cpu")
        sw = "cuda" if cuda else "cpu"
        out_device = "cuda" if residency == "gpu-resident" else "cpu"
        amp = torch.bfloat16 if dtype == "bf16" else None

        def predictor(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=amp is not None):
                return net(x)

        ours = StreamingSlidingWindowInferer(
            (96, 96, 96), sw_batch, 0.5, "gaussian", sw_device=sw, device=out_device, amp_dtype=amp
        )
        logger.info("%s %s %s %s", name, residency, dtype, size)
        with torch.no_grad():
            m = _measure(
                {
                    "monai": lambda: sliding_window_inference(
                        volume, (96, 96, 96), sw_batch, predictor, 0.5, "gaussian", sw_device=sw, device=out_device
                    ),
                    "ours": lambda: ours(volume, net),
                },
                repeats,
            )
        monai_m, ours_m = m["monai"], m["ours"]
        rows.append(
            {
                "network": name,
                "residency": residency,
                "precision": dtype,
                "size": size,
                "sw_batch_size": sw_batch,
                "monai": monai_m,
                "ours": ours_m,
                "ratio": monai_m["seconds"] / ours_m["seconds"],
            }
        )
    return rows


def _make_ct(path: Path, size: List[int], spacing=(0.7, 0.7, 2.5)) -> Path:
    rng = np.random.default_rng(0)
    data = rng.normal(40, 30, size).astype(np.float32)
    data[:, :, : size[2] // 4] = -1000  # air
    nib.save(nib.Nifti1Image(data, np.diag(list(spacing) + [1.0])), str(path))
    return path


def _zoo_way(
    net: torch.nn.Module, source: Path, out_dir: Path, device: torch.device, sw_batch: int
) -> Dict[str, float]:
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        Invertd,
        LoadImaged,
        Orientationd,
        SaveImaged,
        ScaleIntensityRanged,
        Spacingd,
    )

    seconds: Dict[str, float] = {}
    pre = Compose(
        [
            LoadImaged(keys="image", image_only=True),
            EnsureChannelFirstd(keys="image"),
            Orientationd(keys="image", axcodes="RAS"),
            Spacingd(keys="image", pixdim=(1.5, 1.5, 1.5), mode="bilinear"),
            ScaleIntensityRanged(keys="image", a_min=-57, a_max=164, b_min=0.0, b_max=1.0, clip=True),
        ]
    )
    start = time.perf_counter()
    data = pre({"image": str(source)})
    seconds["read+preprocess"] = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        data["pred"] = sliding_window_inference(
            data["image"][None].to(device), (96, 96, 96), sw_batch, net, 0.5, "gaussian"
        )[0].cpu()
    _sync()
    seconds["predict"] = time.perf_counter() - start
    start = time.perf_counter()
    data["pred"] = data["pred"].softmax(0)
    data = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False)(data)
    data["pred"] = data["pred"].argmax(0, keepdim=True)
    seconds["invert"] = time.perf_counter() - start
    start = time.perf_counter()
    SaveImaged(
        keys="pred",
        output_dir=str(out_dir),
        output_postfix="seg",
        separate_folder=False,
        output_dtype=np.uint8,
        resample=False,
    )(data)
    seconds["write"] = time.perf_counter() - start
    return seconds


def end_to_end(size: List[int], repeats: int, sw_batch: int) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = _make_ct(tmp / "ct.nii.gz", size)
        bundle = tmp / "unet"
        shutil.copytree(ROOT / "bundles" / "unet", bundle, ignore=shutil.ignore_patterns("models", "eval"))
        overrides = {
            "spatial_dims": 3,
            "patch_size": [96, 96, 96],
            "pixdim": [1.5, 1.5, 1.5],
            "intensity": {"scheme": "window", "a_min": -57, "a_max": 164},  # ScaleIntensityRanged to [0, 1], clipped
        }
        parser = ConfigParser()
        parser.read_config(str(bundle / "configs" / "inference.json"))
        parser.update(overrides)
        net = parser.get_parsed_content("network_def")
        (bundle / "models").mkdir()
        torch.save(net.state_dict(), bundle / "models" / "model.pt")
        net = net.to(device).eval()
        zoo, ours = [], []
        for i in range(repeats + 1):  # the first round warms up
            logger.info("end to end, round %d of %d", i + 1, repeats + 1)
            zoo.append(_zoo_way(net, source, tmp / "zoo", device, 4))
            (result,) = segment(bundle, source, tmp / "ours", overrides=overrides, overwrite=True, progress=False)
            ours.append(result.seconds)
    median = lambda runs: {k: statistics.median(r[k] for r in runs[1:]) for k in runs[0]}  # noqa: E731
    zoo_m, ours_m = median(zoo), median(ours)
    total_zoo, total_ours = sum(zoo_m.values()), sum(ours_m.values())
    return {
        "size": size,
        "zoo_seconds": zoo_m,
        "ours_seconds": ours_m,
        "zoo_total": total_zoo,
        "ours_total": total_ours,
        "ratio": total_zoo / total_ours,
    }


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=3, default=[384, 384, 256])
    parser.add_argument("--e2e-size", type=int, nargs=3, default=[512, 512, 200])
    parser.add_argument("--sw-batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("monai_ext.segment").setLevel(logging.WARNING)

    rows = window_cases(args.size, args.repeats, args.sw_batch_size)
    print("\nsliding window: seconds (peak GPU MiB), ratio = MONAI / ours")
    for r in rows:
        print(
            f"{r['network']:9s} {r['residency']:12s} {r['precision']}: "
            f"MONAI {r['monai']['seconds']:.3f} s ({r['monai']['peak_gpu_mib']})"
            f"  ours {r['ours']['seconds']:.3f} s ({r['ours']['peak_gpu_mib']})  x{r['ratio']:.2f}"
        )
    report = {"windows": rows}
    if not args.skip_e2e:
        e2e = end_to_end(args.e2e_size, args.repeats, args.sw_batch_size)
        report["end_to_end"] = e2e
        print(
            f"\nend to end {e2e['size']}: zoo way {e2e['zoo_total']:.2f} s "
            f"{json.dumps({k: round(v, 3) for k, v in e2e['zoo_seconds'].items()})}"
        )
        print(
            f"            segment {e2e['ours_total']:.2f} s "
            f"{json.dumps({k: round(v, 3) for k, v in e2e['ours_seconds'].items()})}  x{e2e['ratio']:.2f}"
        )
    write_report(
        report, "bench_sliding_window", torch.device("cuda" if torch.cuda.is_available() else "cpu"), args.output
    )
    return report


SMOKE = ["--size", "40", "40", "40", "--e2e-size", "48", "48", "24", "--repeats", "1"]


def summarize(report: dict) -> List[dict]:
    rows = [
        row(
            f"sliding window {w['network']} {w['residency']}-resident {w['precision']} {'x'.join(map(str, w['size']))}: speed-up",
            w["ours"]["seconds"],
            "MONAI sliding_window_inference",
            w["monai"]["seconds"],
            w["ratio"],
            "s",
        )
        for w in report["windows"]
    ]
    e2e = report["end_to_end"]
    rows.append(
        row(
            f"segment end to end {'x'.join(map(str, e2e['size']))} (read, predict, invert, write): speed-up",
            e2e["ours_total"],
            "MONAI zoo chain (LoadImage, SlidingWindowInferer, Invertd, SaveImage)",
            e2e["zoo_total"],
            e2e["ratio"],
            "s",
        )
    )
    return rows


if __name__ == "__main__":
    main()
