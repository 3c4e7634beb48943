"""Hi-gMISnet against the U-Net bundle: training speed, memory, and Dice after the same time budget.

- **Training iterations/s and peak memory** at ``--size`` (default 96, the synthetic task's), batch
  ``--batch``: one Hi-gMISnet pGAN iteration (two generators, two discriminators, their optimisers:
  ``ParallelGANTrainer``) against one U-Net bundle iteration (forward, loss, backward, step), each bundle's
  own networks and losses. Peak memory: GPU ``max_memory_allocated`` on CUDA, otherwise the peak resident
  memory of a fresh process doing only that.
- **Validation Dice after the same budget** on the synthetic 2D task, each bundle trained through its own
  ``train.json`` for ``--minutes``: the U-Net, Hi-gMISnet with its adversarial and reciprocal terms, and
  Hi-gMISnet without them (``adversarial_weight`` and ``reciprocal_weight`` 0).

Writes ``benchmarks/results/bench_higmisnet_<device>.json``.

Run: ``python -m benchmarks.bench_higmisnet [--minutes 5] [--size 96] [--batch 4]``.
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
logger = logging.getLogger("bench_higmisnet")


def _measure(bundle: str, size: int, batch: int, repeats: int, device: str) -> dict:
    """Training iterations per second and peak memory of one bundle (in a fresh process on the CPU)."""
    torch.manual_seed(0)
    parser = ConfigParser()
    parser.read_config(str(ROOT / "bundles" / bundle / "configs" / "train.json"))
    parser.update({"dataset_dir": "/nonexistent", "device": f"$torch.device('{device}')", "amp": False})
    x = torch.randn(batch, 1, size, size, device=device)
    y = torch.randint(0, 3, (batch, 1, size, size), device=device)
    net = parser.get_parsed_content("network")
    parameters = sum(p.numel() for p in net.parameters())
    if bundle == "higmisnet":
        from monai_ext.engines import ParallelGANTrainer

        disc = parser.get_parsed_content("discriminator")
        parameters += sum(p.numel() for p in disc.parameters())
        engine = ParallelGANTrainer(
            device,
            1,
            [],
            net,
            disc,
            parser.get_parsed_content("optimizer"),
            parser.get_parsed_content("d_optimizer"),
            parser.get_parsed_content("loss"),
            num_classes=3,
        )
        engine.state.device = torch.device(device)

        def step() -> None:
            engine._iteration(engine, {"image": x, "label": y})
    else:
        loss, optimizer = parser.get_parsed_content("loss"), parser.get_parsed_content("optimizer")

        def step() -> None:
            net.train()
            optimizer.zero_grad()
            loss(net(x), y).backward()
            optimizer.step()

    seconds, peak = time_step(step, repeats, device)
    return {
        "iterations_per_second": 1 / seconds,
        "seconds_per_iteration": seconds,
        "peak_mib": peak,
        "parameters": parameters,
    }


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96)
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

    speed = {}
    for bundle in tqdm(("unet", "higmisnet"), desc="iterations"):
        speed[bundle] = (
            _measure(bundle, args.size, args.batch, args.repeats, device)
            if device == "cuda" or args.same_process
            else in_fresh_process(_measure, bundle, args.size, args.batch, args.repeats, device)
        )
        logger.info("%s: %s", bundle, speed[bundle])

    from benchmarks.accuracy.train_synthetic import train_bundle
    from monai_ext.data import make_synthetic_dataset

    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_synthetic_dataset(Path(tmp) / "synthetic2d", num_cases=args.cases, spatial_dims=2, seed=0).parent
        for label, bundle, overrides in (
            ("unet", "unet", None),
            ("higmisnet", "higmisnet", None),
            (
                "higmisnet without adversarial and reciprocal terms",
                "higmisnet",
                {"adversarial_weight": 0.0, "reciprocal_weight": 0.0},
            ),
        ):
            runs[label] = train_bundle(
                bundle, data, Path(tmp) / "runs", args.minutes, 5, overrides, run_name=label.replace(" ", "_")
            )

    ratio = speed["higmisnet"]["iterations_per_second"] / speed["unet"]["iterations_per_second"]
    print(f"\n{args.size}x{args.size}, batch {args.batch}, {device}")
    for bundle, r in speed.items():
        print(
            f"{bundle:10s} {r['iterations_per_second']:.2f} training iterations/s, peak {r['peak_mib']} MiB, "
            f"{r['parameters']:,} parameters"
        )
    print(
        f"Hi-gMISnet / U-Net: iterations/s x{ratio:.3f}, memory "
        f"x{speed['higmisnet']['peak_mib'] / max(speed['unet']['peak_mib'], 1e-6):.2f}"
    )
    for label, r in runs.items():
        print(
            f"{label}: val Dice {r['val_dice_final']:.4f} (best {r['val_dice_best']:.4f}) after {args.minutes:g} min, "
            f"{r['patches_per_second']:.1f} patches/s"
        )
    report = {
        "size": args.size,
        "batch": args.batch,
        "speed": speed,
        "iterations_ratio": ratio,
        "minutes": args.minutes,
        "dice_after_budget": runs,
    }
    write_report(report, "bench_higmisnet", torch.device(device), args.output)
    return report


SMOKE = ["--size", "32", "--batch", "2", "--repeats", "1", "--minutes", "0.02", "--cases", "6", "--same-process"]


def summarize(report: dict) -> List[dict]:
    speed, dice = report["speed"], report["dice_after_budget"]
    ours, ref = speed["higmisnet"], speed["unet"]
    rows = [
        row(
            f"Hi-gMISnet training iterations/s {report['size']}x{report['size']}, batch {report['batch']}: ratio",
            ours["iterations_per_second"],
            "U-Net bundle",
            ref["iterations_per_second"],
            report["iterations_ratio"],
            "it/s",
        ),
        row(
            "Hi-gMISnet training peak memory: ratio (lower is better)",
            ours["peak_mib"],
            "U-Net bundle",
            ref["peak_mib"],
            ours["peak_mib"] / ref["peak_mib"],
            "MiB",
        ),
    ]
    unet = dice["unet"]["val_dice_final"]
    for name, r in dice.items():
        if name != "unet":
            rows.append(
                row(
                    f"{name}: validation Dice after {report['minutes']:g} min: ratio",
                    r["val_dice_final"],
                    "U-Net bundle",
                    unet,
                    r["val_dice_final"] / max(unet, 1e-9),
                )
            )
    return rows


if __name__ == "__main__":
    main()
