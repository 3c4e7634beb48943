"""Planned training against hand settings, at a fixed time budget, on a real-shaped 3D task.

The task: MNI152 volumes from nilearn (``monai_ext.data.mni152``: grey and white matter, 2 mm, about
91x109x91, each moved, cropped, bias-field, gamma and noise changed), 22 cases split 16/3/3 by
``prepare folder``, which plans each bundle for this machine. Each setting trains the bundle through its own
``train.json`` and the overlay, with ``--time_budget`` only (8 minutes), then segments the 3 unseen test
volumes with ``segment`` and scores them (Dice per tissue, mean of the two):

- ``planned``: the overlay as ``prepare folder`` wrote it, nothing else;
- ``planned, schedule not annealed``: the same, with the learning-rate schedule on epochs only (as before
  the schedule spanned the budget): what annealing over the budget changes;
- ``previous defaults, cubic patch``: the settings before planning (8 volumes x 2 patches a step, 4 workers,
  flips on two axes and quarter turns in one plane, a schedule on epochs only), the patch made cubic
  (96^3) so that the batch stacks;
- ``hand: ...``: hand-tuned settings, with everything else as planned; the best of them is the reference.

Run: ``python -m benchmarks.accuracy.planned_training`` (about 75 minutes on 2 cores: 8 runs of 8 minutes and their
evaluation); ``--bundles unet``, ``--settings`` and ``--minutes`` shorten it, ``--merge`` adds to the
results already written. Writes JSON and a plot (validation Dice
against training minutes, one panel per bundle) into ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from benchmarks.common import RESULTS, row, write_report

ROOT = Path(__file__).resolve().parents[2]
SMOKE = [
    "--cases",
    "6",
    "--minutes",
    "0.3",
    "--bundles",
    "unet",
    "--settings",
    "planned",
    "planned, schedule not annealed",
]
OLD_AUGMENTATION = {
    "flip_axes": [0, 1],
    "rotate90_planes": [[0, 1]],
    "rotate_planes": [],
    "rotate_degrees": 0.0,
    "scale": [1.0, 1.0],
    "prob": 0.0,
}
SETTINGS: Dict[str, dict] = {
    "planned": {},
    "planned, schedule not annealed": {"anneal": False},
    "previous defaults, cubic patch": {
        "patch_size": [96, 96, 96],
        "batch_size": 8,
        "num_samples": 2,
        "num_workers": 4,
        "sw_batch_size": 4,
        "augmentation": OLD_AUGMENTATION,
        "anneal": False,
    },
    "hand: 64^3, 8 volumes x 4 patches": {"patch_size": [64, 64, 64], "batch_size": 8, "num_samples": 4},
    "hand: planned patch, 4 volumes x 1 patch": {"batch_size": 4, "num_samples": 1},
    "hand: 48x64x48, 2 volumes x 1 patch": {"patch_size": [48, 64, 48], "batch_size": 2, "num_samples": 1},
}
DEFAULT_SETTINGS = {
    "unet": [s for s in SETTINGS if s != "hand: 48x64x48, 2 volumes x 1 patch"],
    "resunetplusplus": [
        "planned",
        "previous defaults, cubic patch",
        "hand: planned patch, 4 volumes x 1 patch",
        "hand: 48x64x48, 2 volumes x 1 patch",
    ],
}
_VALIDATION = re.compile(r"^(\S+ \S+) - monai_ext\.training - INFO - epoch (\d+)/\d+: val_mean_dice ([0-9.]+)")


def _dice(prediction: np.ndarray, truth: np.ndarray, label: int) -> float:
    p, t = prediction == label, truth == label
    return float(2 * (p & t).sum() / max(p.sum() + t.sum(), 1))


def _lr_schedule_index(bundle: Path) -> int:
    handlers = json.loads((bundle / "configs" / "train.json").read_text())["train"]["handlers"]
    return [h.get("_target_") for h in handlers].index("monai_ext.handlers.LrSchedule")


def train_and_score(bundle: Path, prepared: Path, setting: dict, run: Path, minutes: float) -> dict:
    """Train ``bundle`` with the prepared overlay and ``setting``'s overrides for ``minutes``; score the test cases."""
    import nibabel as nib

    from monai_ext.apps import segment

    overrides = {k: v for k, v in setting.items() if k != "anneal"}
    if not setting.get("anneal", True):
        overrides[f"train#handlers#{_lr_schedule_index(bundle)}#minutes"] = None
    args = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(["configs/train.json", str(prepared / "overlay.json")]),
        "--bundle_root",
        str(run),
        "--time_budget",
        str(minutes),
    ]
    for key, value in overrides.items():
        args += [f"--{key}", "None" if value is None else json.dumps(value)]
    start = time.time()
    proc = subprocess.run(args, capture_output=True, text=True, cwd=bundle)
    seconds = time.time() - start
    if (
        proc.returncode != 0
    ):  # a result too: the setting cannot train on this machine (recorded, the other settings go on)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        reason = (
            "killed by the system (out of memory)"
            if proc.returncode in (-9, 137)
            else errors[-1]
            if errors
            else (proc.stderr.strip().splitlines() or ["no output"])[-1]
        )
        print(f"  {bundle.name} {setting}: training failed: {reason}", flush=True)
        return {
            "overrides": overrides,
            "anneal": setting.get("anneal", True),
            "train_seconds": round(seconds, 1),
            "failed": reason,
            "epochs": 0,
            "validation": [],
            "best_val_dice": None,
            "test_dice": None,
        }
    curve, begin = [], None
    for line in (proc.stdout + proc.stderr).splitlines():
        if "time budget:" in line and begin is None:
            begin = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
        match = _VALIDATION.match(line)
        if match and begin is not None:
            at = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
            curve.append(
                {
                    "epoch": int(match.group(2)),
                    "minutes": round((at - begin).total_seconds() / 60, 3),
                    "val_dice": float(match.group(3)),
                }
            )
    datalist = json.loads((prepared / "datalist.json").read_text())
    per_case = []
    for case in datalist["test"]:
        (result,) = segment(
            bundle,
            case["image"],
            run / "test",
            checkpoint=run / "models" / "model.pt",
            device="cpu",
            progress=False,
            overwrite=True,
        )
        if result.error:
            raise RuntimeError(result.error)
        prediction = np.asarray(nib.load(str(result.output)).dataobj)
        truth = np.asarray(nib.load(case["label"]).dataobj)
        per_case.append(
            {
                "case": Path(case["image"]).name,
                "grey_matter": _dice(prediction, truth, 1),
                "white_matter": _dice(prediction, truth, 2),
            }
        )
    mean = {k: float(np.mean([c[k] for c in per_case])) for k in ("grey_matter", "white_matter")}
    return {
        "overrides": overrides,
        "anneal": setting.get("anneal", True),
        "train_seconds": round(seconds, 1),
        "epochs": curve[-1]["epoch"] if curve else 0,
        "validation": curve,
        "best_val_dice": max((c["val_dice"] for c in curve), default=None),
        "test_dice": float(np.mean(list(mean.values()))),
        "test_dice_per_class": mean,
        "per_case": per_case,
    }


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bundles = report["bundles"]
    fig, axes = plt.subplots(1, len(bundles), figsize=(7 * len(bundles), 4.8), squeeze=False)
    for ax, (name, runs) in zip(axes[0], bundles.items()):
        for setting, r in runs["settings"].items():
            if r.get("failed"):
                continue
            xs, ys = [c["minutes"] for c in r["validation"]], [c["val_dice"] for c in r["validation"]]
            ax.plot(
                xs,
                ys,
                marker="o",
                markersize=3,
                label=f"{setting} (test {r['test_dice']:.3f})",
                linewidth=2.5 if setting == "planned" else 1.2,
            )
        ax.set_title(f"{name}: MNI152 grey/white matter, {report['minutes']:g}-minute budget, {report['device']}")
        ax.set_xlabel("training minutes")
        ax.set_ylabel("validation Dice (mean of the tissues)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summarize(report: dict) -> List[dict]:
    rows = []
    for name, runs in report["bundles"].items():
        settings = runs["settings"]
        planned = settings.get("planned")
        if planned is None:
            continue
        if planned.get("failed"):
            continue
        hand = {k: v for k, v in settings.items() if k.startswith("hand") and not v.get("failed")}
        if hand:
            best = max(hand, key=lambda k: hand[k]["test_dice"])
            rows.append(
                row(
                    f"{name}: planned, test Dice after {report['minutes']:g} min",
                    round(planned["test_dice"], 4),
                    f"best hand-tuned ({best})",
                    round(hand[best]["test_dice"], 4),
                    planned["test_dice"] / hand[best]["test_dice"],
                )
            )
        for other in (
            "previous defaults, cubic patch",
            "planned, schedule not annealed",
            "planned, step time only (before the patch floor)",
        ):
            if other in settings and not settings[other].get("failed"):
                rows.append(
                    row(
                        f"{name}: planned, test Dice after {report['minutes']:g} min",
                        round(planned["test_dice"], 4),
                        other,
                        round(settings[other]["test_dice"], 4),
                        planned["test_dice"] / max(settings[other]["test_dice"], 1e-6),
                    )
                )
    return rows


def main(argv: Optional[List[str]] = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", nargs="+", default=list(DEFAULT_SETTINGS))
    parser.add_argument(
        "--settings", nargs="+", default=None, choices=list(SETTINGS), help="default: per bundle, see DEFAULT_SETTINGS"
    )
    parser.add_argument("--cases", type=int, default=22)
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "planned_training")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument(
        "--merge",
        action="store_true",
        help="add the settings run to the existing results (same task and minutes) rather than replace them",
    )
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from monai_ext.bundle.plan import plan_training
    from monai_ext.bundle.shipped import shipped
    from monai_ext.data.folder import prepare_folder
    from monai_ext.data.mni152 import MNI152_LABELS, make_mni152_cases
    from monai_ext.threads import limit_threads

    limit_threads()
    images, labels = make_mni152_cases(args.work / "cases", num_cases=args.cases, seed=0)
    names = {k: v for k, v in MNI152_LABELS.items() if k}
    report = {
        "task": f"MNI152 grey/white matter, {args.cases} cases (2 mm, about 91x109x91)",
        "minutes": args.minutes,
        "bundles": {},
    }
    previous = args.output or RESULTS / "planned_training_cpu.json"
    if args.merge and previous.is_file():
        old = json.loads(previous.read_text())
        if (old["task"], old["minutes"]) != (report["task"], report["minutes"]):
            raise SystemExit(f"--merge: {previous} holds another task or budget ({old['task']}, {old['minutes']} min)")
        report["bundles"] = old["bundles"]
    jobs = [(b, s) for b in args.bundles for s in (args.settings or DEFAULT_SETTINGS.get(b, list(SETTINGS)))]
    bar = tqdm(jobs, desc="planned training")
    for name in args.bundles:
        bundle = shipped("bundles") / name
        prepared = args.work / f"prepared_{name}"
        print(f"phase: planning {name}", flush=True)
        prepare_folder(images, labels, prepared, label_names=names, planner=partial(plan_training, bundle))
        overlay = json.loads((prepared / "overlay.json").read_text())
        kept = report["bundles"].get(name, {"plan": overlay["plan"], "settings": {}})
        report["bundles"][name] = kept
        if "planned" in [s for b, s in jobs if b == name]:
            kept["plan"] = overlay["plan"]  # the plan is the one the planned setting ran with
        elif (
            kept["plan"] != overlay["plan"]
        ):  # merged onto results of another plan: the new settings run with the new one
            print(
                f"  {name}: the plan differs from the merged results' ({overlay['plan']['patch_size']}, "
                f"{overlay['plan']['machine'].get('seconds_per_patch')} s a patch); each setting records its own",
                flush=True,
            )
        for bundle_name, setting in jobs:
            if bundle_name != name:
                continue
            bar.set_postfix_str(f"{name}: {setting}")
            print(f"phase: {name}, {setting}: {args.minutes:g} min", flush=True)
            run = args.work / f"run_{name}_{re.sub(r'[^a-z0-9]+', '_', setting.lower()).strip('_')}"
            shutil.rmtree(run, ignore_errors=True)  # a fresh run, never a resumed one
            result = train_and_score(bundle, prepared, SETTINGS[setting], run, args.minutes)
            result["effective"] = {
                k: SETTINGS[setting].get(k, overlay[k]) for k in ("patch_size", "batch_size", "num_samples")
            }
            report["bundles"][name]["settings"][setting] = result
            if not result.get("failed"):
                print(
                    f"  {name}, {setting}: test Dice {result['test_dice']:.4f} after {result['epochs']} epochs",
                    flush=True,
                )
            bar.update(1)
    bar.close()
    out = write_report(report, "planned_training", torch.device("cpu"), args.output)
    plot(json.loads(out.read_text()), out.with_suffix(".png"))
    return out


if __name__ == "__main__":
    main()
