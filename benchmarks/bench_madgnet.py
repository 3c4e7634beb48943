"""MADGNet against the U-Net bundle at the same input size: throughput, memory, and Dice after the same time.

- **Throughput and memory**: each bundle's ``network_def`` (from its ``inference.json``) at ``--size``
  (default 352, the paper's), training images/s (forward, the bundle's loss, backward, Adam step; batch
  ``--batch``) and inference images/s (evaluation mode, no gradients). Peak memory: GPU
  ``max_memory_allocated`` on CUDA; on the CPU the peak resident memory of a fresh process that does only
  that measurement.
- **Dice after the same budget**: both bundles trained through their own ``train.json`` on the synthetic
  2D task for ``--minutes`` each (``train_synthetic.train_bundle``).

Ratios are MADGNet / U-Net. Writes ``benchmarks/results/bench_madgnet_<device>.json``.

Run: ``python -m benchmarks.bench_madgnet [--size 352] [--batch 4] [--minutes 5]``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import List, Optional

import torch
from monai.bundle import ConfigParser
from tqdm import tqdm

from benchmarks.common import in_fresh_process, row, time_step, write_report

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("bench_madgnet")


def _network_and_loss(bundle: str, channels: int):
    parser = ConfigParser()
    parser.read_config([str(ROOT / "bundles" / bundle / "configs" / "train.json")])
    parser.update({"in_channels": channels, "dataset_dir": "/nonexistent"})
    return parser.get_parsed_content("network_def"), parser.get_parsed_content("loss")


def _measure(bundle: str, mode: str, size: int, batch: int, repeats: int, device: str) -> dict:
    """Images per second and peak memory of one bundle's network in one mode (run in a fresh process on CPU)."""
    torch.manual_seed(0)
    net, loss = _network_and_loss(bundle, 1)
    net = net.to(device)
    x = torch.randn(batch, 1, size, size, device=device)
    y = torch.randint(0, 3, (batch, 1, size, size), device=device)
    optimizer = torch.optim.Adam(net.parameters(), 1e-4)

    def step() -> None:
        if mode == "train":
            net.train()
            optimizer.zero_grad()
            loss(net(x), y).backward()
            optimizer.step()
        else:
            net.eval()
            with torch.no_grad():
                net(x)

    seconds, peak = time_step(step, repeats, device)
    return {
        "images_per_second": batch / seconds,
        "seconds_per_batch": seconds,
        "peak_mib": peak,
        "parameters": sum(p.numel() for p in net.parameters()),
    }


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=352)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--cases", type=int, default=60)
    parser.add_argument(
        "--same-process", action="store_true", help="measure in this process (CPU peak memory then covers all)"
    )
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("ignite").setLevel(logging.WARNING)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    throughput = {}
    for bundle, mode in tqdm([(b, m) for b in ("unet", "madgnet") for m in ("train", "infer")], desc="throughput"):
        logger.info("%s %s at %dx%d, batch %d on %s", bundle, mode, args.size, args.size, args.batch, device)
        throughput[f"{bundle}/{mode}"] = (
            _measure(bundle, mode, args.size, args.batch, args.repeats, device)
            if device == "cuda" or args.same_process
            else in_fresh_process(_measure, bundle, mode, args.size, args.batch, args.repeats, device)
        )

    from benchmarks.accuracy.train_synthetic import train_bundle
    from monai_ext.data import make_synthetic_dataset

    dice = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_synthetic_dataset(Path(tmp) / "synthetic2d", num_cases=args.cases, spatial_dims=2, seed=0).parent
        for bundle in ("unet", "madgnet"):
            dice[bundle] = train_bundle(bundle, data, Path(tmp) / "runs", args.minutes, val_interval=5)

    ratios = {
        mode: throughput[f"madgnet/{mode}"]["images_per_second"] / throughput[f"unet/{mode}"]["images_per_second"]
        for mode in ("train", "infer")
    }
    print(f"\n{args.size}x{args.size}, batch {args.batch}, {device}: MADGNet / U-Net")
    for mode in ("train", "infer"):
        u, m = throughput[f"unet/{mode}"], throughput[f"madgnet/{mode}"]
        print(
            f"{mode:5s}: U-Net {u['images_per_second']:.2f} img/s ({u['peak_mib']} MiB), "
            f"MADGNet {m['images_per_second']:.2f} img/s "
            f"({m['peak_mib']} MiB): throughput x{ratios[mode]:.3f}, memory x{m['peak_mib'] / max(u['peak_mib'], 1e-6):.2f}"
        )
    for bundle, r in dice.items():
        print(
            f"{bundle:8s} after {args.minutes:g} min: val Dice {r['val_dice_final']:.4f} (best {r['val_dice_best']:.4f}), "
            f"{r['patches_per_second']:.1f} patches/s"
        )
    report = {
        "size": args.size,
        "batch": args.batch,
        "throughput": throughput,
        "throughput_ratio": ratios,
        "minutes": args.minutes,
        "dice_after_budget": dice,
    }
    write_report(report, "bench_madgnet", torch.device(device), args.output)
    return report


SMOKE = ["--size", "64", "--batch", "2", "--repeats", "1", "--minutes", "0.02", "--cases", "6", "--same-process"]


def summarize(report: dict) -> List[dict]:
    t, size, batch = report["throughput"], report["size"], report["batch"]
    rows = []
    for mode in ("train", "infer"):
        ours, ref = t[f"madgnet/{mode}"], t[f"unet/{mode}"]
        rows.append(
            row(
                f"MADGNet {mode} throughput {size}x{size}, batch {batch}: ratio",
                ours["images_per_second"],
                "U-Net bundle",
                ref["images_per_second"],
                ours["images_per_second"] / ref["images_per_second"],
                "images/s",
            )
        )
        rows.append(
            row(
                f"MADGNet {mode} peak memory: ratio (lower is better)",
                ours["peak_mib"],
                "U-Net bundle",
                ref["peak_mib"],
                ours["peak_mib"] / ref["peak_mib"],
                "MiB",
            )
        )
    dice = report["dice_after_budget"]
    rows.append(
        row(
            f"MADGNet validation Dice after {report['minutes']:g} min: ratio",
            dice["madgnet"]["val_dice_final"],
            "U-Net bundle",
            dice["unet"]["val_dice_final"],
            dice["madgnet"]["val_dice_final"] / max(dice["unet"]["val_dice_final"], 1e-9),
        )
    )
    return rows


if __name__ == "__main__":
    main()
