"""MedSegDiff: DDPM with 1000 steps (the paper) against DDIM with few steps, on the synthetic 2D task.

1. Trains the MedSegDiff bundle through its own ``configs/train.json`` for ``--minutes`` on the synthetic
   2D task (``train_synthetic.train_bundle``: the bundle's network, DDPM schedule and loss).
2. Samples ``--images`` held-out test cases with each setting, ensemble ``--ensemble`` (5, the official
   README's): ``ddpm-1000`` (the paper's) and ``ddim-50``, ``ddim-25``, ``ddim-10``, each with the same seed.
3. Reports, per setting: Dice at threshold 0.5 of the ensemble mean (averaged over the foreground classes
   and images) and, **for comparison with the official evaluation only**, the official script's Dice:
   the prediction divided by its own maximum, thresholded at {0.1, 0.3, 0.5, 0.7, 0.9}, averaged; seconds
   per image; and the ratios to ``ddpm-1000`` (the target: DDIM with 50 steps or fewer within 1 Dice point
   of DDPM-1000, at least 20x faster).
4. On CUDA also images per second with the ensemble batched in one call per step against its members
   sampled one after another.

Writes ``benchmarks/results/bench_medsegdiff_<device>.json``.

Run: ``python -m benchmarks.bench_medsegdiff [--minutes 5] [--images 3] [--ensemble 5]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
from monai.bundle import ConfigParser
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from tqdm import tqdm

from benchmarks.common import row, write_report
from monai_ext.inferers import DiffusionSegmentationInferer

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("bench_medsegdiff")
THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)


def _dice(pred: torch.Tensor, truth: torch.Tensor) -> float:
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * (pred & truth).sum() / total)


def score(probability: torch.Tensor, label: torch.Tensor) -> Dict[str, float]:
    """Dice at 0.5 and the official threshold-averaged Dice, averaged over the foreground classes."""
    at_half, official = [], []
    for c in range(probability.shape[0]):
        truth = label[0] == c + 1
        p = probability[c]
        at_half.append(_dice(p >= 0.5, truth))
        normalised = p / p.max().clamp_min(1e-8)
        official.append(sum(_dice(normalised >= t, truth) for t in THRESHOLDS) / len(THRESHOLDS))
    return {"dice_0.5": sum(at_half) / len(at_half), "dice_official_thresholds": sum(official) / len(official)}


def settings() -> Dict[str, tuple]:
    return {
        "ddpm-1000": (DDPMScheduler, 1000),
        "ddim-50": (DDIMScheduler, 50),
        "ddim-25": (DDIMScheduler, 25),
        "ddim-10": (DDIMScheduler, 10),
    }


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--cases", type=int, default=60)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--ensemble", type=int, default=5)
    parser.add_argument("--settings", nargs="+", default=list(settings()))
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("ignite").setLevel(logging.WARNING)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    from benchmarks.accuracy.train_synthetic import train_bundle
    from monai_ext.data import make_synthetic_dataset

    results: Dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_synthetic_dataset(Path(tmp) / "synthetic2d", num_cases=args.cases, spatial_dims=2, seed=0).parent
        training = train_bundle("medsegdiff", data, Path(tmp) / "runs", args.minutes, val_interval=5)
        logger.info("trained: %s", {k: training[k] for k in ("train_seconds", "epochs", "val_dice_final")})

        config = ConfigParser()
        config.read_config(str(ROOT / "bundles" / "medsegdiff" / "configs" / "inference.json"))
        config.update({"dataset_dir": str(data), "bundle_root": str(Path(tmp) / "runs" / "medsegdiff")})
        net = config.get_parsed_content("network_def")
        net.load_state_dict(
            torch.load(Path(tmp) / "runs" / "medsegdiff" / "models" / "model.pt", map_location="cpu", weights_only=True)
        )
        net = net.to(device).eval()
        preprocessing = config.get_parsed_content("preprocessing")
        cases = json.loads((data / "datalist.json").read_text())["test"][: args.images]
        items = []
        for case in cases:
            image = preprocessing({"image": str(data / case["image"])})["image"]
            label = torch.from_numpy(__import__("nibabel").load(str(data / case["label"])).get_fdata()).long()[None]
            items.append((image[None].to(device), label))
        patch = config.get_parsed_content("patch_size")
        for name in tqdm(args.settings, desc="samplers"):
            kind, steps = settings()[name]
            sampler = DiffusionSegmentationInferer(
                kind(1000, prediction_type=config.get_parsed_content("prediction_type")),
                steps,
                ensemble=args.ensemble,
                seed=0,
                maps=("probability",),
                roi_size=patch,
            )
            scores, seconds = [], []
            for image, label in items:
                start = time.perf_counter()
                probability = sampler(image, net)[0].cpu()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds.append(time.perf_counter() - start)
                scores.append(score(probability, label))
            results[name] = {
                "steps": steps,
                "ensemble": args.ensemble,
                "seconds_per_image": sum(seconds) / len(seconds),
                "dice_0.5": sum(s["dice_0.5"] for s in scores) / len(scores),
                "dice_official_thresholds": sum(s["dice_official_thresholds"] for s in scores) / len(scores),
            }
            logger.info("%s: %s", name, results[name])

        batched = None
        if device.type == "cuda":
            sampler = DiffusionSegmentationInferer(
                DDIMScheduler(1000), 50, ensemble=args.ensemble, seed=0, maps=("probability",)
            )
            single = DiffusionSegmentationInferer(DDIMScheduler(1000), 50, ensemble=1, seed=0, maps=("probability",))
            image = items[0][0]
            start = time.perf_counter()
            sampler.sample(image, net)
            torch.cuda.synchronize()
            together = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(args.ensemble):
                single.sample(image, net)
            torch.cuda.synchronize()
            apart = time.perf_counter() - start
            batched = {"batched_seconds": together, "sequential_seconds": apart, "speedup": apart / together}

    reference = results.get("ddpm-1000")
    print(
        f"\nMedSegDiff after {args.minutes:g} min of training, {len(items)} test image(s), ensemble {args.ensemble}, {device}"
    )
    for name, r in results.items():
        extra = ""
        if reference and name != "ddpm-1000":
            r["dice_points_vs_ddpm"] = 100 * (r["dice_0.5"] - reference["dice_0.5"])
            r["speedup_vs_ddpm"] = reference["seconds_per_image"] / r["seconds_per_image"]
            extra = f"  {r['dice_points_vs_ddpm']:+.1f} Dice points, x{r['speedup_vs_ddpm']:.1f} faster than ddpm-1000"
        print(
            f"{name:10s} Dice@0.5 {r['dice_0.5']:.4f}  Dice (official thresholds) {r['dice_official_thresholds']:.4f}  "
            f"{r['seconds_per_image']:.2f} s/image{extra}"
        )
    if batched:
        print(f"batched ensemble: x{batched['speedup']:.2f} against members one after another")
    report = {
        "minutes": args.minutes,
        "training": training,
        "images": len(items),
        "ensemble": args.ensemble,
        "samplers": results,
        "batched_ensemble": batched,
    }
    write_report(report, "bench_medsegdiff", device, args.output)
    return report


SMOKE = ["--minutes", "0.02", "--cases", "6", "--images", "1", "--ensemble", "2", "--settings", "ddim-10", "ddim-25"]


def summarize(report: dict) -> List[dict]:
    samplers, ensemble = report["samplers"], report["ensemble"]
    reference = samplers.get("ddpm-1000")
    rows = []
    for name, r in samplers.items():
        if name == "ddpm-1000":
            continue
        for key, label in (
            ("dice_0.5", "Dice at 0.5"),
            ("dice_official_thresholds", "Dice averaged over the official thresholds"),
        ):
            rows.append(
                row(
                    f"MedSegDiff {name} x{ensemble} {label}: ratio",
                    r[key],
                    f"DDPM-1000 x{ensemble}",
                    reference[key] if reference else None,
                    r[key] / reference[key] if reference and reference[key] else None,
                )
            )
        rows.append(
            row(
                f"MedSegDiff {name} x{ensemble} seconds per image: speed-up",
                r["seconds_per_image"],
                f"DDPM-1000 x{ensemble}",
                reference["seconds_per_image"] if reference else None,
                r.get("speedup_vs_ddpm"),
                "s",
            )
        )
    if report.get("batched_ensemble"):
        b = report["batched_ensemble"]
        rows.append(
            row(
                f"MedSegDiff DDIM-50 ensemble of {ensemble} in one batch: speed-up",
                b["batched_seconds"],
                "members one after another",
                b["sequential_seconds"],
                b["speedup"],
                "s",
            )
        )
    return rows


if __name__ == "__main__":
    main()
