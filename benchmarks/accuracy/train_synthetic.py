"""Train each classic bundle on the default synthetic 2D task for a fixed time budget.

For every bundle (``unet``, ``unetplusplus``, ``resunet``, ``resunetplusplus`` by default) this builds the
bundle's own ``configs/train.json`` (nothing changed but the data set, the output folder, the number of
data-loader workers and the epoch limit), trains until ``--minutes`` of wall-clock time have passed, then
runs the bundle's validation evaluator once and reports:

- validation Dice: mean over the foreground classes (blob, tube) and cases, at the end of the budget, the
  best one seen at the validation intervals (the checkpoint the bundle keeps as ``models/model.pt``) and
  the time at which it first reached 0.90;
- training throughput: training patches per second (the bundle samples 2 patches per image).

The reference is the issue's target: Dice >= 0.90 within 5 minutes on 2 CPU cores. Writes
``benchmarks/results/train_synthetic_<device>.json``.

Run: ``python -m benchmarks.accuracy.train_synthetic [--minutes 5] [--bundles unet resunet] [--cases 60]``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import torch
from ignite.engine import Events
from monai.bundle import ConfigParser
from tqdm import tqdm

from benchmarks.common import row, write_report
from monai_ext.data import make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[2]
CLASSIC = ["unet", "unetplusplus", "resunet", "resunetplusplus"]
logger = logging.getLogger("train_synthetic")


def train_bundle(
    name: str,
    dataset_dir: Path,
    work_dir: Path,
    minutes: Optional[float],
    val_interval: int,
    overrides: Optional[dict] = None,
    run_name: Optional[str] = None,
    max_steps: Optional[int] = None,
    eval_every: Optional[int] = None,
) -> dict:
    """Train bundle ``name`` through its own ``train.json`` for ``minutes`` of training or ``max_steps`` optimiser
    steps, whichever ends first. Validation: the bundle's own, every ``val_interval`` epochs, or (``eval_every``)
    its evaluator every that many steps and at the end instead. With ``max_steps`` the bundle's schedule spans the
    run (``max_epochs`` = the epochs those steps take). Each validation is a point of the learning curve:
    optimiser steps, training images seen, training seconds (validation excluded) and mean foreground Dice."""
    import math

    bundle = ROOT / "bundles" / name
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    parser.update(
        {
            "bundle_root": str(work_dir / (run_name or name)),
            "dataset_dir": str(dataset_dir),
            "num_workers": 0,
            "val_interval": 10**9 if eval_every else val_interval,
            "train#trainer#max_epochs": 100_000,
            **(overrides or {}),
        }
    )
    if not max_steps:  # a schedule over 100,000 epochs would stay at its start: span 100 epochs instead
        for key in ("T_max", "total_iters"):
            if key in parser["lr_scheduler"]:
                parser[f"lr_scheduler#{key}"] = 100
    if max_steps:
        loader = parser.get_parsed_content("train#dataloader")
        parser["train#dataloader"] = loader  # built (and cached) once: setting a value resets the parsed objects
        parser["train#trainer#max_epochs"] = math.ceil(max_steps / len(loader))  # the schedule refers to it
    parser.get_parsed_content("initialize")  # evaluates the bundle's initialize expressions (determinism)
    trainer = parser.get_parsed_content("train#trainer")
    evaluator = parser.get_parsed_content("validate#evaluator")
    net = parser.get_parsed_content("network")

    state = {"start": None, "images": 0, "validating": 0.0, "best": 0.0, "curve": []}
    budget = None if minutes is None else minutes * 60.0

    def seconds() -> float:
        return time.perf_counter() - state["start"] - state["validating"]

    @trainer.on(Events.STARTED)
    def _start(engine):
        state["start"] = time.perf_counter()

    @trainer.on(Events.ITERATION_COMPLETED)
    def _tick(engine):
        batch = engine.state.batch
        state["images"] += batch["image"].shape[0] if isinstance(batch, dict) else len(batch)
        if (budget is not None and seconds() > budget) or (max_steps and engine.state.iteration >= max_steps):
            engine.terminate()

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _record(engine):
        dice = float(engine.state.metrics.get("val_mean_dice", 0.0))
        state["best"] = max(state["best"], dice)
        state["curve"].append(
            {
                "steps": trainer.state.iteration,
                "images": state["images"],
                "seconds": round(seconds(), 1),
                "dice": round(dice, 4),
            }
        )

    if eval_every:

        @trainer.on(Events.ITERATION_COMPLETED(every=eval_every))
        def _validate(engine):
            begin = time.perf_counter()
            evaluator.run(global_epoch=engine.state.epoch)
            state["validating"] += time.perf_counter() - begin

    logger.info(
        "%s: %d parameters, training for %s",
        name,
        sum(p.numel() for p in net.parameters()),
        " or ".join(
            ([f"{minutes:g} min"] if minutes is not None else []) + ([f"{max_steps} steps"] if max_steps else [])
        ),
    )
    trainer.run()
    train_seconds = seconds()
    if not state["curve"] or state["curve"][-1]["steps"] != trainer.state.iteration:
        begin = time.perf_counter()
        evaluator.run(global_epoch=trainer.state.epoch)
        state["validating"] += time.perf_counter() - begin
    final = state["curve"][-1]["dice"]
    return {
        "bundle": name,
        "overrides": overrides or {},
        "parameters": sum(p.numel() for p in net.parameters()),
        "train_seconds": round(train_seconds, 1),
        "steps": trainer.state.iteration,
        "epochs": trainer.state.epoch,
        "patches_per_second": round(state["images"] / train_seconds, 2),
        "val_dice_final": round(final, 4),
        "val_dice_best": round(max(state["best"], final), 4),
        "seconds_to_0.90": next((c["seconds"] for c in state["curve"] if c["dice"] >= 0.90), None),
        "target_met": final >= 0.90,
        "curve": state["curve"],
    }


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", nargs="+", default=CLASSIC)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--cases", type=int, default=60)
    parser.add_argument("--val-interval", type=int, default=5)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("ignite").setLevel(logging.WARNING)

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        dataset = make_synthetic_dataset(Path(tmp) / "synthetic2d", num_cases=args.cases, spatial_dims=2, seed=0).parent
        logger.info("synthetic 2D data set: %d cases in %s", args.cases, dataset)
        for name in tqdm(args.bundles, desc="train_synthetic"):
            results.append(train_bundle(name, dataset, Path(tmp) / "runs", args.minutes, args.val_interval))
            r = results[-1]
            logger.info(
                "%s: val Dice %.4f (best %.4f), %.1f patches/s",
                name,
                r["val_dice_final"],
                r["val_dice_best"],
                r["patches_per_second"],
            )

    print(f"\nsynthetic 2D task, {args.minutes:g} min per bundle, target Dice >= 0.90")
    for r in results:
        print(
            f"{r['bundle']:16s} {r['parameters']:>10,d} params  Dice {r['val_dice_final']:.4f} (best {r['val_dice_best']:.4f})  "
            f"{r['patches_per_second']:.1f} patches/s  {r['epochs']} epochs  0.90 at {r['seconds_to_0.90']} s  "
            f"{'MET' if r['target_met'] else 'not met'}"
        )
    report = {"minutes_per_bundle": args.minutes, "cases": args.cases, "results": results}
    write_report(report, "train_synthetic", torch.device("cuda" if torch.cuda.is_available() else "cpu"), args.output)
    return report


SMOKE = ["--bundles", "unet", "--minutes", "0.05", "--cases", "6", "--val-interval", "1"]


def summarize(report: dict) -> List[dict]:
    minutes = report.get("minutes_per_bundle", 5.0)
    return [
        row(
            f"{r['bundle']}: validation Dice on the synthetic task after {minutes:g} min (target 0.90)",
            r["val_dice_final"],
            "target",
            0.90,
            r["val_dice_final"] / 0.90,
        )
        for r in report["results"]
    ]


if __name__ == "__main__":
    main()
