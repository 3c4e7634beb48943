"""Learning curves: validation Dice against optimiser steps, training images seen and training seconds, for
every bundle, trained through its own ``configs/train.json`` on the same synthetic data with the same seeds.

- 2D: the synthetic 2D task at ``--size2d`` (default 128x128, the whole image as the patch);
- 3D: the synthetic 3D task at ``--size3d`` (default 48^3), for every bundle in ``--bundles3d``.

Each bundle trains for ``--steps`` optimiser steps (its learning-rate schedule spans them), and its evaluator runs
every ``--eval-every`` steps (validation time is not counted in the seconds). Targets (issue 17): validation
Dice 0.90 in 2D and 0.85 in 3D within 1,000 steps, and a final Dice no more than 0.03 below the best
(stability). Reported per bundle: steps to the target, best and final Dice, seconds per step, and, as the
per-step reference, the U-Net's best Dice within as many steps on the same task.

A full run takes hours on a CPU; ``--append`` keeps the other bundles' results in the output file, so that
bundles can be run in turns (``--bundles resunet --append``).

Writes ``benchmarks/results/learning_curves_<device>.json`` and ``benchmarks/results/learning_curves.png`` (one
curve per bundle, against steps, images and seconds; a row per task).

Run: ``python -m benchmarks.accuracy.learning_curves [--steps 1000] [--bundles unet madgnet] [--dims 2]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import List, Optional

import torch
from tqdm import tqdm

from benchmarks.accuracy.train_synthetic import train_bundle
from benchmarks.common import RESULTS, row, write_report
from monai_ext.data import make_synthetic_dataset

HERE = Path(__file__).resolve().parents[1]  # benchmarks/
BUNDLES = ["unet", "unetplusplus", "resunet", "resunetplusplus", "madgnet", "higmisnet", "medsegdiff"]
TARGETS = {2: 0.90, 3: 0.85}
SETTINGS = {"medsegdiff": {"validate_steps": 25}}  # the issue's sampler for the targets: DDIM, 25 steps
STABILITY = 0.03
SMOKE = [
    "--steps",
    "2",
    "--eval-every",
    "1",
    "--bundles",
    "unet",
    "--dims",
    "2",
    "--size2d",
    "32",
    "--cases",
    "6",
    "--no-plot",
]
logger = logging.getLogger("learning_curves")


def _reference_best(task: dict, steps: int) -> Optional[float]:
    """The U-Net's best validation Dice within ``steps`` optimiser steps in ``task`` (the per-step reference)."""
    unet = next((r for r in task["results"] if r["bundle"] == "unet"), None)
    points = [c["dice"] for c in (unet or {}).get("curve", []) if c["steps"] <= steps]
    return max(points) if points else None


def _summary(result: dict, dims: int) -> dict:
    target = TARGETS[dims]
    curve = result["curve"]
    reached = next((c for c in curve if c["dice"] >= target), None)
    return {
        "target": target,
        "steps_to_target": reached["steps"] if reached else None,
        "seconds_to_target": reached["seconds"] if reached else None,
        "best": result["val_dice_best"],
        "final": result["val_dice_final"],
        "stable": result["val_dice_best"] - result["val_dice_final"] <= STABILITY,
        "seconds_per_step": round(result["train_seconds"] / max(result["steps"], 1), 3),
    }


def plot(report: dict, path: Path) -> Path:
    """One row per task, columns: Dice against steps, images seen and training seconds; a curve per bundle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = report["tasks"]
    fig, axes = plt.subplots(len(tasks), 3, figsize=(15, 4.2 * len(tasks)), squeeze=False, sharey=True)
    for row_axes, task in zip(axes, tasks):
        for result in task["results"]:
            curve = result["curve"]
            for ax, key in zip(row_axes, ("steps", "images", "seconds")):
                ax.plot(
                    [c[key] for c in curve],
                    [c["dice"] for c in curve],
                    marker=".",
                    label=result["bundle"],
                    color=f"C{BUNDLES.index(result['bundle'])}",
                )  # one colour per bundle in every row
        for ax, label in zip(
            row_axes,
            (
                "optimiser steps",
                "training images seen",
                "training seconds (2 CPU threads)" if not torch.cuda.is_available() else "training seconds",
            ),
        ):
            ax.axhline(TARGETS[task["spatial_dims"]], color="grey", linestyle="--", linewidth=1)
            ax.set_xlabel(label)
            ax.grid(alpha=0.3)
        row_axes[0].set_ylabel(f"validation Dice, synthetic {task['spatial_dims']}D {'x'.join(map(str, task['size']))}")
        row_axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle("Learning curves: every bundle through its own train.json, same data and seeds (dashed: target)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", nargs="+", default=BUNDLES, choices=BUNDLES)
    parser.add_argument(
        "--bundles3d", nargs="*", default=BUNDLES, choices=BUNDLES, help="bundles trained on the 3D task"
    )
    parser.add_argument("--dims", nargs="+", type=int, default=[2, 3], choices=[2, 3])
    parser.add_argument("--steps", type=int, default=1000, help="optimiser steps per bundle")
    parser.add_argument("--eval-every", type=int, default=50, help="validate every this many steps")
    parser.add_argument("--size2d", type=int, default=128)
    parser.add_argument("--size3d", type=int, default=48)
    parser.add_argument("--cases", type=int, default=60)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=HERE / "results" / "learning_curves.png")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument(
        "--append",
        action="store_true",
        help="keep the other bundles' results of the output file (a full run takes hours on a CPU: run bundles in turns)",
    )
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    output = args.output or RESULTS / f"learning_curves_{device.type}.json"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("ignite").setLevel(logging.WARNING)

    def size_of(dims: int) -> List[int]:
        return [args.size2d if dims == 2 else args.size3d] * dims

    if (
        args.append and output.is_file()
    ):  # before hours of training: the results must be comparable with those they join
        planned = [{"spatial_dims": d, "size": size_of(d), "cases": args.cases, "results": []} for d in args.dims]
        try:
            merge(json.loads(output.read_text())["tasks"], planned)
        except ValueError as e:
            parser.exit(2, f"learning_curves: {output}: {e}\n")

    tasks = []
    with tempfile.TemporaryDirectory(prefix="learning_curves_") as tmp:
        for dims in args.dims:
            size = size_of(dims)
            data = make_synthetic_dataset(
                Path(tmp) / f"synthetic{dims}d", num_cases=args.cases, spatial_dims=dims, size=size, seed=0
            ).parent
            names = [b for b in args.bundles if dims == 2 or b in args.bundles3d]
            logger.info(
                "synthetic %dD task, %s: %d cases; %s", dims, "x".join(map(str, size)), args.cases, ", ".join(names)
            )
            results = []
            for name in tqdm(names, desc=f"learning curves {dims}D"):
                result = train_bundle(
                    name,
                    data,
                    Path(tmp) / f"runs{dims}d",
                    None,
                    1,
                    {"spatial_dims": dims, "patch_size": size, **SETTINGS.get(name, {})},
                    max_steps=args.steps,
                    eval_every=args.eval_every,
                )
                result["summary"] = _summary(result, dims)
                results.append(result)
                s = result["summary"]
                logger.info(
                    "%dD %s: Dice best %.4f, final %.4f; %s to %.2f; %.3f s per step",
                    dims,
                    name,
                    s["best"],
                    s["final"],
                    f"{s['steps_to_target']} steps" if s["steps_to_target"] else "not",
                    s["target"],
                    s["seconds_per_step"],
                )
            tasks.append({"spatial_dims": dims, "size": size, "cases": args.cases, "results": results})
    kept = {}
    if args.append and output.is_file():  # read again: runs appended while this one trained stay
        old = json.loads(output.read_text())
        try:
            tasks = merge(old["tasks"], tasks)
            kept = {
                k: old[k] for k in ("variants", "note") if k in old
            }  # runs recorded beside the tasks stay with them
        except ValueError as e:  # the file changed under this run: keep the run beside it, not lost, not mixed in
            unmerged = [p.with_name(f"{p.stem}_unmerged{p.suffix}") for p in (output, args.plot)]
            logger.warning("%s: %s; this run goes to %s", output, e, unmerged[0])
            output, args.plot = unmerged
    for task in tasks:
        for r in task["results"]:
            r["summary"]["unet_best_in_same_steps"] = _reference_best(task, r["steps"])

    print("\nlearning curves")
    for task in tasks:
        for r in task["results"]:
            s = r["summary"]
            print(
                f"{task['spatial_dims']}D {r['bundle']:16s} {r['steps']:>5} steps  best {s['best']:.4f} final {s['final']:.4f}  "
                f"{s['target']:.2f} at {s['steps_to_target'] or '-':>5} steps  {s['seconds_per_step']:.3f} s/step  "
                f"{'stable' if s['stable'] else 'UNSTABLE'}"
            )
    report = {
        "tasks": tasks,
        "targets": {"dice_2d": TARGETS[2], "dice_3d": TARGETS[3], "within_steps": 1000, "stability": STABILITY},
        **kept,
    }
    if not args.no_plot:
        report["plot"] = str(
            plot(report, args.plot).relative_to(HERE) if args.plot.resolve().is_relative_to(HERE) else args.plot
        )
        logger.info("plot: %s", args.plot)
    write_report(report, "learning_curves", device, output)
    return report


def merge(old: List[dict], new: List[dict]) -> List[dict]:
    """``old`` tasks with ``new`` results in place of the same bundle's on the same task (dimensions and size).
    Raises ``ValueError`` where the same task was run on another number of cases (its results would not compare)."""
    tasks = [dict(t, results=list(t["results"])) for t in old]
    for task in new:
        same = next((t for t in tasks if t["spatial_dims"] == task["spatial_dims"] and t["size"] == task["size"]), None)
        if same is None:
            tasks.append(task)
            continue
        if same.get("cases") != task["cases"]:
            raise ValueError(
                f"the {task['spatial_dims']}D {'x'.join(map(str, task['size']))} task there has {same.get('cases')} cases, "
                f"not {task['cases']}: pass --cases {same.get('cases')} or another --output"
            )
        names = {r["bundle"] for r in task["results"]}
        same["results"] = [r for r in same["results"] if r["bundle"] not in names] + task["results"]
        same["results"].sort(key=lambda r: BUNDLES.index(r["bundle"]))
    return tasks


def summarize(report: dict) -> List[dict]:
    rows = []
    for task in report["tasks"]:
        for r in task["results"]:
            s = r["summary"]
            steps = (
                f"{s['steps_to_target']} steps to {s['target']:.2f}"
                if s["steps_to_target"]
                else f"{s['target']:.2f} not reached"
            )
            reference = s.get("unet_best_in_same_steps") if r["bundle"] != "unet" else None
            rows.append(
                row(
                    f"{r['bundle']} {task['spatial_dims']}D {'x'.join(map(str, task['size']))}: "
                    f"best validation Dice in {r['steps']} steps "
                    f"({steps}; final {s['final']:.4f}{'' if s['stable'] else ', unstable'}; {s['seconds_per_step']:.3f} s/step)",
                    s["best"],
                    "U-Net's best in as many steps" if reference else "target",
                    reference or s["target"],
                    s["best"] / (reference or s["target"]),
                )
            )
    return rows


if __name__ == "__main__":
    main()
