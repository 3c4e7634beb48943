"""``python -m monai_ext demo``: the whole path on a laptop, no data and no GPU needed.

1. writes a small synthetic 3D data set (blobs and tubes, :mod:`monai_ext.data.synthetic`; 40 cases of 32^3:
   28 to train on, 6 to validate, 6 held out);
2. trains the U-Net bundle through its own ``configs/train.json`` (``monai.bundle.run``), validating every two
   epochs and stopping once both classes reach the validation target (``target_dice``), after ``epochs``
   epochs, or, as a safety cap only, when the time budget is spent;
3. segments the held-out volumes with the ``segment`` pipeline (:func:`monai_ext.apps.segment`), which reads
   the trained settings from the checkpoint;
4. writes the masks (NIfTI, the input's geometry), an overlay PNG of one held-out volume (prediction filled per
   class, ground truth outlined, four slices), the training curves and a metrics JSON (Dice per class for every
   held-out volume and their mean), and says where each is and how to reuse the model.

The demo's settings differ from the bundle's defaults only where a short run needs it: 30 epochs at most
(the cosine schedule spans them) at learning rate 3e-3 (the bundle's 1e-3 suits its 200 epochs), batches of 4
volumes with one patch each, validation every 2 epochs. Its length is fixed in epochs and its stop by the
validation target, both deterministic (the run folder starts empty, one seed, no data-loader workers), so every
machine trains the same run and prints the same numbers; the 10-minute budget is only a cap for a machine
far slower than expected. On a machine with CUDA the training and the segmentation use the GPU. 56 seconds in
all on an idle 2-core machine (measured 2026-12-03: the target at epoch 24, 1.8 s an epoch).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Optional, Union

import nibabel as nib
import numpy as np
import torch

from monai_ext.apps.segment import segment
from monai_ext.bundle import read_record
from monai_ext.bundle.shipped import shipped
from monai_ext.data.synthetic import make_synthetic_dataset
from monai_ext.metrics import segmentation_metrics
from monai_ext.visualize import overlay_png

__all__ = ["run_demo", "TRAINING_THREADS"]

# PyTorch's CPU kernels split their sums by thread, so the thread count changes the last bits of every step and,
# over a run, the metrics; the demo trains with this many threads on any machine so that every machine prints
# the same numbers (on a machine with fewer cores it is a little slower)
TRAINING_THREADS = 2

logger = logging.getLogger("monai_ext.demo")


def _one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    return np.stack([labels == c for c in range(classes)]).astype(np.float32)


def run_demo(
    output_dir: Union[str, Path] = "demo",
    bundle: Union[str, Path, None] = None,
    epochs: int = 30,
    cases: int = 40,
    size: int = 32,
    seed: int = 0,
    target: float = 0.85,
    learning_rate: float = 3e-3,
    minutes: Optional[float] = 10.0,
    val_interval: int = 2,
    num_samples: int = 1,
) -> dict:
    """Run the demo into ``output_dir``; returns the report written to ``metrics.json`` (with the files'
    paths). Training stops at ``epochs`` or once both classes reach validation Dice ``target`` (validated every
    ``val_interval`` epochs, ``num_samples`` patches per volume), or, as a cap only, when the next epoch would
    end after ``minutes`` (``None`` or 0: no cap)."""
    from monai.bundle import run as bundle_run

    out = Path(output_dir)
    bundle = Path(bundle) if bundle else shipped("bundles") / "unet"
    overrides = {"spatial_dims": 3, "patch_size": [size] * 3}
    timings = {}

    start = time.perf_counter()
    data = make_synthetic_dataset(out / "data", num_cases=cases, spatial_dims=3, size=(size,) * 3, seed=seed).parent
    timings["data"] = time.perf_counter() - start
    logger.info("phase 1/4: %d synthetic volumes (%d^3) in %s (%.1f s)", cases, size, data, timings["data"])

    start = time.perf_counter()
    run_root = out / "run"
    shutil.rmtree(run_root, ignore_errors=True)  # a new run, not the best of this and an earlier one
    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(TRAINING_THREADS)  # the bundle's initialize gives PyTorch this many
    logger.info(
        "phase 2/4: training %s (3D) until both classes reach validation Dice %.2f, at most %d epochs",
        bundle.name,
        target,
        epochs,
    )
    try:
        bundle_run(
            config_file=str(bundle / "configs" / "train.json"),
            meta_file=str(bundle / "configs" / "metadata.json"),
            logging_file=str(bundle / "configs" / "logging.conf"),
            bundle_root=str(run_root),
            dataset_dir=str(data),
            num_workers=0,
            val_interval=max(1, min(val_interval, epochs)),
            target_dice=target,
            learning_rate=learning_rate,
            time_budget=minutes or None,  # 0: no cap
            **{"train#trainer#max_epochs": epochs, "batch_size": 4, "num_samples": num_samples},
            **overrides,
        )
    finally:
        if threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = threads
    timings["train"] = time.perf_counter() - start
    model = run_root / "models" / "model.pt"
    record = read_record(model) or {}
    trained_epochs = (record.get("metric") or {}).get("epoch")
    logger.info("phase 2/4: trained in %.1f s; best model (epoch %s): %s", timings["train"], trained_epochs, model)

    start = time.perf_counter()
    datalist = json.loads((data / "datalist.json").read_text())
    heldout = out / "heldout"  # the held-out volumes as a folder of cases: one segment run, one model load
    shutil.rmtree(heldout, ignore_errors=True)
    heldout.mkdir(parents=True)
    for entry in datalist["test"]:
        shutil.copyfile(data / entry["image"], heldout / Path(entry["image"]).name)
    # the checkpoint carries the settings it was trained with: nothing to repeat here
    results = {
        Path(r.input).name: r
        for r in segment(bundle, heldout, out / "segmentation", checkpoint=model, overwrite=True, progress=False)
    }
    failed = [r.error for r in results.values() if r.error]
    if failed:
        raise RuntimeError(failed[0])
    timings["segment"] = time.perf_counter() - start
    logger.info(
        "phase 3/4: segmented %d held-out volumes -> %s (%.1f s)",
        len(results),
        out / "segmentation",
        timings["segment"],
    )

    start = time.perf_counter()
    names = {1: "blob", 2: "tube"}
    per_case, maps = {}, {}
    for entry in datalist["test"]:
        truth = np.asarray(nib.load(str(data / entry["label"])).dataobj).astype(np.int64)
        mask = np.asarray(nib.load(str(results[Path(entry["image"]).name].output)).dataobj).astype(np.int64)
        maps[entry["image"]] = truth, mask
        per_case[entry["image"]] = segmentation_metrics(
            _one_hot(mask, 3), _one_hot(truth, 3), names, spacing=(1.0, 1.0, 1.0)
        )
        per_case[entry["image"]].update({f"voxels_{n}": int((truth == c).sum()) for c, n in names.items()})
    # the picture shows a typical volume: the median of the held-out volumes' mean Dice over the classes
    ranked = sorted(
        datalist["test"], key=lambda e: np.nanmean([per_case[e["image"]][f"dice_{n}"] for n in names.values()])
    )
    case = ranked[(len(ranked) - 1) // 2]
    result, metrics = results[Path(case["image"]).name], per_case[case["image"]]
    image = nib.load(str(data / case["image"])).get_fdata(dtype=np.float32)
    truth, mask = maps[case["image"]]
    mean = {f"dice_{n}": float(np.nanmean([m[f"dice_{n}"] for m in per_case.values()])) for n in names.values()}
    overlay_png(
        image[None],
        mask,
        truth,
        out / "overlay.png",
        class_names=names,
        title=f"{case['image']}: {bundle.name} prediction (filled) and ground truth (outlined); "
        f"Dice blob {metrics['dice_blob']:.3f}, tube {metrics['dice_tube']:.3f}",
    )
    report = {
        "case": case["image"],
        "mask": str(result.output),
        "model": str(model),
        "overlay": str(out / "overlay.png"),
        "training_curves": str(run_root / "eval" / "training_curves.png"),
        "bundle": str(bundle),
        "trained_epochs": trained_epochs,
        "validation_dice": (record.get("metric") or {}).get("value"),
        "heldout": {"cases": len(per_case), **mean, "per_case": per_case},
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "seconds": {**timings, **{f"segment.{k}": v for k, v in result.seconds.items()}},
        "metrics": metrics,
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=4) + "\n")
    report["metrics_file"] = str(out / "metrics.json")
    timings["report"] = time.perf_counter() - start
    logger.info(
        "phase 4/4: held-out Dice (mean of %d volumes) blob %.3f, tube %.3f",
        len(per_case),
        mean["dice_blob"],
        mean["dice_tube"],
    )
    return report


def closing_block(report: dict) -> str:
    """What the demo made, where, and the command that reuses its model on the user's own volume."""
    total = sum(v for k, v in report["seconds"].items() if "." not in k)
    held = report["heldout"]
    worst = []
    for name in ("blob", "tube"):
        case, m = min(
            held["per_case"].items(), key=lambda item: np.nan_to_num(item[1][f"dice_{name}"], nan=np.inf)
        )  # NaN: class absent
        worst.append(f"{name} {m[f'dice_{name}']:.3f} in {case} ({m[f'voxels_{name}']} voxels of {name})")
    return "\n".join(
        [
            f"demo done in {total / 60:.1f} min: held-out Dice blob {held['dice_blob']:.3f}, tube {held['dice_tube']:.3f} "
            f"(mean of {held['cases']} volumes; per volume in the metrics file)",
            f"  best validation Dice {report['validation_dice']:.3f} (mean of the classes); lowest held-out: {'; '.join(worst)}"
            if report["validation_dice"] is not None
            else f"  lowest held-out: {'; '.join(worst)}",
            f"  model      {report['model']}  (best validation, epoch {report['trained_epochs']}; it records its settings)",
            f"  masks      {Path(report['mask']).parent}  (one per held-out volume)",
            f"  picture    {report['overlay']}  (the median held-out volume, {report['case']}: Dice blob "
            f"{report['metrics']['dice_blob']:.3f}, "
            f"tube {report['metrics']['dice_tube']:.3f})",
            f"  curves     {report['training_curves']}",
            f"  metrics    {report['metrics_file']}",
            "segment your own volume (a NIfTI file, a DICOM folder, or a folder of cases) with this model:",
            f"  python -m monai_ext segment --bundle {report['bundle']} --checkpoint {report['model']} "
            "--input <volume> --output <folder>",
        ]
    )
