"""``python -m monai_ext demo``: the whole path on a laptop, no data and no GPU needed.

1. writes a small synthetic 3D data set (blobs and tubes, :mod:`monai_ext.data.synthetic`);
2. trains the U-Net bundle through its own ``configs/train.json`` (``monai.bundle.run``), validating every few
   epochs and stopping once both classes reach the validation target (``target_dice``);
3. segments a held-out volume with the ``segment`` pipeline (:func:`monai_ext.apps.segment`), which reads the
   trained settings from the checkpoint;
4. writes the mask (NIfTI, the input's geometry), an overlay PNG (prediction filled per class, ground truth
   outlined, four slices), the training curves and a metrics JSON, and says where each is and how to reuse the
   model.

On a machine with CUDA the training and the segmentation use the GPU. About 4 minutes on 2 CPU cores
(100 epochs at most; the validation target stops it earlier where it is met).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Union

import nibabel as nib
import numpy as np
import torch

from monai_ext.apps.segment import segment
from monai_ext.bundle import read_record
from monai_ext.bundle.shipped import shipped
from monai_ext.data.synthetic import make_synthetic_dataset
from monai_ext.metrics import segmentation_metrics
from monai_ext.visualize import overlay_png

__all__ = ["run_demo"]

logger = logging.getLogger("monai_ext.demo")


def _one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    return np.stack([labels == c for c in range(classes)]).astype(np.float32)


def run_demo(
    output_dir: Union[str, Path] = "demo",
    bundle: Union[str, Path, None] = None,
    epochs: int = 100,
    cases: int = 20,
    size: int = 48,
    seed: int = 0,
    target: float = 0.85,
) -> dict:
    """Run the demo into ``output_dir``; returns the report written to ``metrics.json`` (with the files'
    paths). Training stops at ``epochs`` or once both classes reach validation Dice ``target``."""
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
    logger.info("phase 2/4: training %s (3D) until both classes reach validation Dice %.2f, at most %d epochs", bundle.name, target, epochs)
    bundle_run(
        config_file=str(bundle / "configs" / "train.json"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        bundle_root=str(run_root),
        dataset_dir=str(data),
        num_workers=0,
        val_interval=max(1, min(5, epochs)),
        target_dice=target,
        **{"train#trainer#max_epochs": epochs, "batch_size": 4},
        **overrides,
    )
    timings["train"] = time.perf_counter() - start
    model = run_root / "models" / "model.pt"
    record = read_record(model) or {}
    trained_epochs = (record.get("metric") or {}).get("epoch")
    logger.info("phase 2/4: trained in %.1f s; best model (epoch %s): %s", timings["train"], trained_epochs, model)

    start = time.perf_counter()
    datalist = json.loads((data / "datalist.json").read_text())
    case = datalist["test"][0]
    # the checkpoint carries the settings it was trained with: nothing to repeat here
    (result,) = segment(bundle, data / case["image"], out / "segmentation", checkpoint=model, overwrite=True, progress=False)
    if result.error:
        raise RuntimeError(result.error)
    timings["segment"] = time.perf_counter() - start
    logger.info("phase 3/4: segmented %s -> %s (%.1f s)", case["image"], result.output, timings["segment"])

    start = time.perf_counter()
    image = nib.load(str(data / case["image"])).get_fdata(dtype=np.float32)
    truth = np.asarray(nib.load(str(data / case["label"])).dataobj).astype(np.int64)
    mask = np.asarray(nib.load(str(result.output)).dataobj).astype(np.int64)
    names = {1: "blob", 2: "tube"}
    metrics = segmentation_metrics(_one_hot(mask, 3), _one_hot(truth, 3), names, spacing=(1.0, 1.0, 1.0))
    overlay_png(image[None], mask, truth, out / "overlay.png", class_names=names,
                title=f"{case['image']}: {bundle.name} prediction (filled) and ground truth (outlined); "
                      f"Dice blob {metrics['dice_blob']:.3f}, tube {metrics['dice_tube']:.3f}")
    report = {
        "case": case["image"],
        "mask": str(result.output),
        "model": str(model),
        "overlay": str(out / "overlay.png"),
        "training_curves": str(run_root / "eval" / "training_curves.png"),
        "bundle": str(bundle),
        "trained_epochs": trained_epochs,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "seconds": {**timings, **{f"segment.{k}": v for k, v in result.seconds.items()}},
        "metrics": metrics,
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=4) + "\n")
    report["metrics_file"] = str(out / "metrics.json")
    timings["report"] = time.perf_counter() - start
    logger.info("phase 4/4: Dice blob %.3f, tube %.3f", metrics["dice_blob"], metrics["dice_tube"])
    return report


def closing_block(report: dict) -> str:
    """What the demo made, where, and the command that reuses its model on the user's own volume."""
    total = sum(v for k, v in report["seconds"].items() if "." not in k)
    return "\n".join([
        f"demo done in {total / 60:.1f} min: Dice blob {report['metrics']['dice_blob']:.3f}, tube {report['metrics']['dice_tube']:.3f} "
        f"on the held-out volume {report['case']}",
        f"  model      {report['model']}  (best validation, epoch {report['trained_epochs']}; it records its settings)",
        f"  mask       {report['mask']}",
        f"  picture    {report['overlay']}",
        f"  curves     {report['training_curves']}",
        f"  metrics    {report['metrics_file']}",
        "segment your own volume (a NIfTI file, a DICOM folder, or a folder of cases) with this model:",
        f"  python -m monai_ext segment --bundle {report['bundle']} --checkpoint {report['model']} --input <volume> --output <folder>",
    ])
